//! Tells the nginx test whether nginx is installed: without it the test is reported as ignored,
//! except in CI (`CI` set), where it runs and fails loudly.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(nginx)");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    let installed = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir: std::path::PathBuf| dir.join("nginx"))
        .any(|path| path.is_file());
    for dir in ["/usr/sbin", "/usr/local/sbin"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    if installed || std::env::var_os("CI").is_some() {
        println!("cargo:rustc-cfg=nginx");
    }
}
