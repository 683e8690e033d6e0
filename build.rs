// The migrations are compiled into the binary by `sqlx::migrate!`; rebuild when they change.
// The compiler's version is recorded for `nexusd_build_info`.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=NEXUSD_RUSTC_VERSION={version}");
}
