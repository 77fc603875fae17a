//! One binary: `anchovy` needs no shared library beyond the C library (OpenSSL for
//! libssh2 and zlib are built from source and linked in), so it runs on any Linux of its
//! architecture with a glibc as new as the build machine's, without packages.

/// The libraries a glibc program may always need: the loader, the C and math
/// libraries, the GCC runtime (unwinding) and the kernel's vDSO.
const ALLOWED: &[&str] = &[
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

#[test]
fn the_binary_needs_no_shared_library_beyond_the_c_library() {
    let bin = assert_cmd::cargo::cargo_bin("anchovy");
    let out = std::process::Command::new("ldd")
        .arg(&bin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd {}: {text}", bin.display());
    let libs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|l| l.rsplit('/').next().unwrap_or(l))
        .collect();
    assert!(libs.contains(&"libc.so.6"), "{text}");
    let extra: Vec<&&str> = libs.iter().filter(|l| !ALLOWED.contains(l)).collect();
    assert!(
        extra.is_empty(),
        "the binary links {extra:?} dynamically (OpenSSL or zlib no longer vendored?):\n{text}"
    );
}
