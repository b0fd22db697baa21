//! Sessions in SQL databases (in progress).
