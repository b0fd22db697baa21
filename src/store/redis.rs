//! Sessions in Redis (in progress).
