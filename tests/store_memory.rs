//! The conformance suite on `MemoryStore`.

use sessionware::store::conformance::Harness;
use sessionware::MemoryStore;

struct Memory;

impl Harness for Memory {
    type Store = MemoryStore;

    async fn fresh(&self) -> MemoryStore {
        MemoryStore::new()
    }

    async fn twin(&self, store: &MemoryStore) -> MemoryStore {
        store.clone()
    }
}

sessionware::store_conformance_tests!(Memory);
