// When scripts/fuzz links the RocksDB archive the main build already made
// (ROCKSDB_LIB_DIR, instead of compiling RocksDB's C++ once more for the
// sanitizer build), the C++ standard library must be linked explicitly.
fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    if std::env::var_os("ROCKSDB_LIB_DIR").is_some() {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }
}
