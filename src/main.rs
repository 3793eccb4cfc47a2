//! `unionfs`: parse the command line, run it, turn the outcome into an exit code.

use std::process::ExitCode;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let subcommands = unionfs::cli::subcommand_names();
    let result = if unionfs::compat::is_compat(&args, &subcommands) {
        // fuse-overlayfs's command line (container engines, mount.fuse3).
        match unionfs::compat::parse(&args) {
            Ok(req) => {
                init_logging(req.debug);
                unionfs::cli::mount(req).map(|()| 0)
            }
            Err(e) => Err(e),
        }
    } else {
        // A usage error prints clap's whole message (what is missing or unknown, the
        // nearest subcommand, the usage line) and exits with 2; --help and --version exit 0.
        let cli = match unionfs::cli::Cli::parse_args() {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
        init_logging(cli.debug);
        unionfs::cli::run_code(cli)
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("unionfs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Quiet by default (warnings and errors), everything with `--debug`; `RUST_LOG` overrides.
fn init_logging(debug: bool) {
    // fuser warns when it finds its mount already gone at exit (after `unionfs umount`).
    let default = if debug { "debug,fuser::session=error" } else { "warn,fuser::session=error" };
    // `RUST_LOG` as `level,target=level,...` (target filters only: no regex engine in the
    // daemon, whose resident size the benchmark measures against the C peers).
    let parse = |s: &str| s.parse::<Targets>().ok();
    let filter = std::env::var("RUST_LOG").ok().and_then(|s| parse(&s)).or_else(|| parse(default)).unwrap_or_default();
    // Colours only on a terminal, not in a `--log` file or a journal.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ignored = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour))
        .with(filter)
        .try_init();
}
