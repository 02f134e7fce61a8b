//! Shared by the fuzz targets: the repository's schemas and routes.

use std::path::PathBuf;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn catalog() -> &'static gateway::schema::Catalog {
    static CATALOG: OnceLock<gateway::schema::Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        gateway::schema::Catalog::load(&repo_root().join("schemas")).expect("the repo's schemas load")
    })
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}
