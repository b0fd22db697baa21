//! Load comparison of sessionware with tower-sessions, axum_session and a bare handler
//! (issue 4). `./run.sh` is the one command; it builds this binary and runs `drive`.
//!
//! ```text
//! bench-harness serve <mode> <port> <redis-url>   one mode's server (the driver starts it)
//! bench-harness drive <redis-url> <out.md>        the whole comparison, written as Markdown
//! bench-harness scale <memory|redis> <n> <url>    one scale measurement (the driver runs it)
//! ```

mod app;
mod client;
mod concurrency;
mod driver;
mod proc_stats;
mod redis_stats;
mod report;
mod scale;
mod server;
mod wrk;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", mode, port, redis_url] => {
            let mode: app::Mode = mode.parse().unwrap_or_else(|err: String| usage(&err));
            let port = port.parse().unwrap_or_else(|_| usage("bad port"));
            server::run(mode, port, redis_url);
        }
        ["drive", redis_url, out] => driver::run(redis_url, out.as_ref()),
        ["scale", store, live, redis_url] => {
            let live = live.parse().unwrap_or_else(|_| usage("bad session count"));
            scale::run(store, live, redis_url);
        }
        _ => usage("unknown command"),
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: bench-harness serve <mode> <port> <redis-url> | drive <redis-url> <out.md> | scale <memory|redis> <n> <redis-url>");
    std::process::exit(2)
}
