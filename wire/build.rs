//! With the `regen` feature, regenerates `src/generated/tessera_generated.rs` from
//! `schema/tessera.fbs` using a flatc (23.5.26, matching the `flatbuffers` runtime) built from
//! source by the `flatc` crate. Ordinary builds use the committed code and need no C++.

fn main() {
    println!("cargo:rerun-if-changed=schema/tessera.fbs");
    #[cfg(feature = "regen")]
    {
        let status = std::process::Command::new(flatc::flatc())
            .args(["--rust", "-o", "src/generated", "schema/tessera.fbs"])
            .status()
            .expect("run flatc");
        assert!(status.success(), "flatc failed");
    }
}
