//! The container manager's command line (Docker's verbs), and its dispatch.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::error::Error;
use crate::manager as m;
use crate::manager::archive::Format;
use crate::manager::inspect::Kind;
use crate::manager::listing::Style;

/// The manager's subcommands (flattened into the top level).
#[derive(Debug, Subcommand)]
pub enum ManagerCmd {
    /// Create a container from an image and mount it; prints its mount path.
    Run(CreateArgs),
    /// Create a container (writable layer, not mounted); prints its name.
    Create(CreateArgs),
    /// Mount stopped containers again.
    ///
    /// Each is mounted over the same writable layer; a running one is left as it is.
    Start(NamesArgs),
    /// Unmount containers (their writable layers stay).
    Stop(StopArgs),
    /// Remove containers and their writable layers (volumes stay).
    Rm(RmArgs),
    /// List containers.
    ///
    /// With -s, SIZE is the writable layer, and virtual adds the image's layers.
    Ps(PsArgs),
    /// Print a container's mount path.
    MountPath(NameArg),
    /// Show what a container changed: A added, C changed, D deleted.
    ///
    /// A path with a control character, a backslash, a double quote or bytes that are not
    /// UTF-8 is printed quoted, with C escapes (as git does).
    Diff(DiffArgs),
    /// Make a new image from a container's changes.
    ///
    /// The new image is the container's image plus its writable layer, with the image's
    /// config (command, environment) kept. The name moves to the new image; an image that
    /// had it stays, by id.
    Commit(CommitArgs),
    /// Write a container's changes as a deterministic OCI layer tarball.
    ExportLayer(ExportArgs),
    /// List images.
    Images(ListArgs),
    /// Load images from an archive (docker save, podman save, OCI).
    ///
    /// Reads a docker-archive, an OCI archive or an OCI image layout directory, plain, gzip
    /// or zstd. Every blob's digest is checked; layers the store has are not stored again.
    Load(LoadArgs),
    /// Save images to an archive that podman, docker and containerd load.
    ///
    /// Writes an OCI archive (or a docker-archive with --format docker-archive); each layer
    /// is written back byte for byte, so the ids are the same after a load.
    Save(SaveArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Remove images (as `image rm`).
    Rmi(RmiArgs),
    /// Show containers, images or volumes as JSON.
    ///
    /// Ids, layers, mount and upper directories, sizes, the image config, state.
    Inspect(InspectArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage volumes (data that outlives containers).
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Show the storage driver's facts and counts (like `docker info`).
    Info,
    /// Show space used by images, containers and volumes (like `docker system df`).
    Df(DfArgs),
}

/// `unionfs run` / `unionfs create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Container name (default: cont- followed by the first 8 digits of its id).
    #[arg(long)]
    pub name: Option<String>,
    /// Where to mount it (default: ROOT/containers/NAME/merged).
    #[arg(long, value_name = "DIR")]
    pub mountpoint: Option<PathBuf>,
    /// Show a volume (by name, created if missing) or a host directory (absolute path) at
    /// /path, a directory (or a path the image does not have): VOLUME:/path. May repeat.
    #[arg(short = 'v', long = "volume", value_name = "VOL:/path")]
    pub volumes: Vec<String>,
    /// Most bytes the writable layer may allocate (like 10M, 2G): past it writes fail with
    /// EDQUOT; `ps -s` shows it.
    #[arg(long, value_name = "SIZE", value_parser = super::size_arg)]
    pub size_limit: Option<u64>,
    /// Most objects the writable layer may hold.
    #[arg(long, value_name = "N")]
    pub inode_limit: Option<u64>,
    /// The image: NAME or NAME:TAG (the tag defaults to latest) or id.
    pub image: String,
}

impl CreateArgs {
    /// The writable layer's limits.
    pub fn limits(&self) -> crate::manager::containers::Limits {
        crate::manager::containers::Limits { size: self.size_limit, inodes: self.inode_limit }
    }
}

/// Container names.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Container names (or id prefixes).
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `unionfs stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Detach a busy mount now (it goes away when the last user leaves) instead of failing.
    #[arg(short, long)]
    pub force: bool,
    /// Container names (or id prefixes).
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `unionfs rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove running containers too (each is stopped first).
    #[arg(short, long)]
    pub force: bool,
    /// Container names (or id prefixes).
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// How a list is printed.
#[derive(Debug, Args)]
pub struct StyleArgs {
    /// Print only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print `json` (one object a line), or a template: `{{.ID}}\t{{.Names}}` (`table` in
    /// front adds a header; `json` lists the fields).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

impl StyleArgs {
    fn style(&self) -> Style {
        Style { quiet: self.quiet, format: self.format.clone() }
    }
}

/// `unionfs ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Show sizes: writable layer (virtual: with the image's layers).
    #[arg(short, long)]
    pub size: bool,
    #[command(flatten)]
    pub style: StyleArgs,
}

/// `unionfs images`, `volume ls`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub style: StyleArgs,
}

/// One container.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Container name (or id prefix).
    pub name: String,
}

/// `unionfs diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Container name (or id prefix).
    pub name: String,
    /// End each entry with a NUL byte instead of a newline, and print paths as they are.
    #[arg(short = 'z')]
    pub z: bool,
}

/// `unionfs commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Container name.
    pub name: String,
    /// The new image, NAME or NAME:TAG.
    pub image: String,
}

/// `unionfs export-layer`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to FILE (default: standard output, which must not be a terminal).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Container name.
    pub name: String,
}

/// `unionfs df`.
#[derive(Debug, Args)]
pub struct DfArgs {
    /// Per image (shared versus unique bytes), container and volume.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `unionfs load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The archive (file) or OCI layout (directory); default: standard input.
    #[arg(short, long, value_name = "FILE|DIR")]
    pub input: Option<PathBuf>,
    /// Name the image NAME:TAG instead of the archive's name (an archive of one image).
    #[arg(short, long, value_name = "NAME:TAG")]
    pub tag: Option<String>,
    /// Print only the image ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `unionfs save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to FILE (default: standard output, which must not be a terminal).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Archive format.
    #[arg(long, value_enum, default_value = "oci-archive")]
    pub format: Format,
    /// Images: NAME:TAG or id.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `unionfs tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: NAME:TAG or id.
    pub source: String,
    /// Its new name, NAME:TAG.
    pub target: String,
}

/// `unionfs rmi` / `unionfs image rm`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove an image a container uses (only its names: the image stays until the
    /// container is removed), or every name of an image given by id.
    #[arg(short, long)]
    pub force: bool,
    /// Images: NAME:TAG or id (prefix).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `unionfs inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Look only for this kind of object.
    #[arg(long = "type", value_enum)]
    pub kind: Option<Kind>,
    /// Names or ids.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `unionfs ... prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(short, long)]
    pub force: bool,
}

/// `unionfs container ...`.
#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// List containers (as `ps`).
    Ls(PsArgs),
    /// Remove every container that is not running.
    Prune(PruneArgs),
    /// Show containers as JSON.
    Inspect(NamesArgs),
}

/// `unionfs image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build an image from layer sources: directories or layer tarballs (plain, gzip,
    /// zstd; OCI whiteouts become the union's). The FIRST source is the BOTTOM layer.
    /// (A whole image archive is read by `unionfs load`.)
    Import {
        /// The image, NAME or NAME:TAG.
        image: String,
        /// Layer sources, base first.
        #[arg(required = true)]
        sources: Vec<PathBuf>,
    },
    /// List images (as `images`).
    Ls(ListArgs),
    /// Remove images (refused while a container uses them); unused layers are deleted.
    Rm(RmiArgs),
    /// Remove images without a name that no container uses, and their layers.
    Prune {
        /// Every image no container uses, named or not.
        #[arg(short, long)]
        all: bool,
        #[command(flatten)]
        p: PruneArgs,
    },
    /// Give an image another name (as `tag`).
    Tag(TagArgs),
    /// Load images (as `load`).
    Load(LoadArgs),
    /// Save images (as `save`).
    Save(SaveArgs),
    /// Show images as JSON.
    Inspect(NamesArgs),
}

/// `unionfs volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume.
    Create {
        /// Volume name.
        name: String,
    },
    /// List volumes.
    Ls(ListArgs),
    /// Remove volumes (refused while a container uses them).
    Rm {
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune(PruneArgs),
    /// Show volumes as JSON.
    Inspect(NamesArgs),
}

/// Asks before a prune, unless `-f`; refuses without a terminal to ask on.
fn confirm(p: &PruneArgs, what: &str) -> Result<(), Error> {
    if p.force {
        return Ok(());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Error::msg(format!("this removes {what}; add -f to do it without asking")));
    }
    eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Error::io("cannot read the answer", e))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") { Ok(()) } else { Err(Error::msg("nothing removed")) }
}

/// Runs a manager command; returns the exit code.
pub fn run(root: Option<&Path>, cmd: ManagerCmd) -> Result<u8, Error> {
    use ManagerCmd as C;
    let out = match cmd {
        C::Run(a) => {
            m::create(root, a.name.as_deref(), &a.image, a.mountpoint.as_deref(), &a.volumes, a.limits(), true)?
        }
        C::Create(a) => {
            m::create(root, a.name.as_deref(), &a.image, a.mountpoint.as_deref(), &a.volumes, a.limits(), false)?
        }
        C::Start(a) => m::start(root, &a.names)?,
        C::Stop(a) => m::stop(root, &a.names, a.force)?,
        C::Rm(a) => m::rm(root, &a.names, a.force)?,
        C::Ps(a) | C::Container(ContainerCmd::Ls(a)) => m::ps(root, a.all, a.size, &a.style.style())?,
        C::MountPath(a) => m::mount_path(root, &a.name)?,
        C::Diff(a) => {
            let out = m::diff(root, &a.name, a.z)?;
            return std::io::Write::write_all(&mut std::io::stdout().lock(), &out)
                .map(|()| 0)
                .map_err(|e| Error::io("cannot write the changes", e));
        }
        C::Commit(a) => m::commit(root, &a.name, &a.image)?,
        C::ExportLayer(a) => m::export_layer(root, &a.name, a.output.as_deref())?,
        C::Images(a) | C::Image(ImageCmd::Ls(a)) => m::imagecmd::images(root, &a.style.style())?,
        C::Load(a) | C::Image(ImageCmd::Load(a)) => {
            m::imagecmd::load(root, a.input.as_deref(), a.tag.as_deref(), a.quiet)?
        }
        C::Save(a) | C::Image(ImageCmd::Save(a)) => m::imagecmd::save(root, &a.images, a.output.as_deref(), a.format)?,
        C::Tag(a) | C::Image(ImageCmd::Tag(a)) => m::imagecmd::tag(root, &a.source, &a.target)?,
        C::Rmi(a) | C::Image(ImageCmd::Rm(a)) => m::imagecmd::image_rm(root, &a.images, a.force)?,
        C::Inspect(a) => m::inspect::inspect(root, &a.names, a.kind)?,
        C::Container(ContainerCmd::Inspect(a)) => m::inspect::inspect(root, &a.names, Some(Kind::Container))?,
        C::Image(ImageCmd::Inspect(a)) => m::inspect::inspect(root, &a.names, Some(Kind::Image))?,
        C::Volume(VolumeCmd::Inspect(a)) => m::inspect::inspect(root, &a.names, Some(Kind::Volume))?,
        C::Image(ImageCmd::Import { image, sources }) => m::imagecmd::image_import(root, &image, &sources)?,
        C::Container(ContainerCmd::Prune(p)) => {
            confirm(&p, "all stopped containers")?;
            m::container_prune(root)?
        }
        C::Image(ImageCmd::Prune { all, p }) => {
            confirm(&p, if all { "all images without a container" } else { "all images without a name" })?;
            m::imagecmd::image_prune(root, all)?
        }
        C::Volume(VolumeCmd::Prune(p)) => {
            confirm(&p, "all volumes no container uses")?;
            m::volume_prune(root)?
        }
        C::Volume(VolumeCmd::Create { name }) => m::volume_create(root, &name)?,
        C::Volume(VolumeCmd::Ls(a)) => m::volume_ls(root, &a.style.style())?,
        C::Volume(VolumeCmd::Rm { names }) => m::volume_rm(root, &names)?,
        C::Info => m::info(root)?,
        C::Df(a) => m::df(root, a.verbose)?,
    };
    print!("{out}");
    Ok(0)
}
