//! Tells the tests that need a server from Debian's packages whether it is installed (nginx for
//! the nginx test, etcd for the etcd tests): without it such a test is reported as ignored,
//! except in CI (`CI` set), where it runs and fails loudly.

/// Whether `binary` is in the `PATH` or one of `extra` directories.
fn installed(binary: &str, extra: &[&str]) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(extra.iter().map(std::path::PathBuf::from))
        .map(|dir| dir.join(binary))
        .any(|path| path.is_file())
}

fn main() {
    println!("cargo:rustc-check-cfg=cfg(nginx)");
    println!("cargo:rustc-check-cfg=cfg(etcd)");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    let ci = std::env::var_os("CI").is_some();
    if ci || installed("nginx", &["/usr/sbin", "/usr/local/sbin"]) {
        println!("cargo:rustc-cfg=nginx");
    }
    if ci || installed("etcd", &["/usr/bin", "/usr/local/bin"]) {
        println!("cargo:rustc-cfg=etcd");
    }
}
