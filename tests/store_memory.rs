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

// Not yet in the macro (a Redis Cluster does not keep it), but this store does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_user_ends_a_session_rotating_meanwhile() {
    sessionware::store::conformance::revoking_a_user_ends_a_session_rotating_meanwhile(&Memory)
        .await;
}
