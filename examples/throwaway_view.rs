//! A throwaway writable view of a directory: what a test suite does to give each test its
//! own copy of a fixture tree without copying it.
//!
//! `cargo run --example throwaway_view` (needs /dev/fuse; as a normal user, fusermount3).

use unionfs::api::UnionMount;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fixture tree (in a real test suite: a directory checked into the repository).
    let fixture = std::env::temp_dir().join(format!("unionfs-example-{}", std::process::id()));
    std::fs::create_dir_all(fixture.join("src"))?;
    std::fs::write(fixture.join("src/main.rs"), "fn main() {}\n")?;
    std::fs::write(fixture.join("README.md"), "# demo\n")?;

    // Each test gets its own view; writes go to a throwaway upper layer.
    let view = UnionMount::builder().lower(&fixture).mount()?;
    std::fs::write(view.path().join("src/main.rs"), "fn main() { println!(\"changed\"); }\n")?;
    std::fs::write(view.path().join("NEW.txt"), "added\n")?;
    std::fs::remove_file(view.path().join("README.md"))?;

    println!("changes in the view:");
    for (change, path) in view.changes()? {
        println!("  {} /{}", change.letter(), path.display());
    }
    drop(view); // unmounts and deletes the throwaway upper

    println!("the fixture is untouched: README.md still exists = {}", fixture.join("README.md").exists());
    std::fs::remove_dir_all(&fixture)?;
    Ok(())
}
