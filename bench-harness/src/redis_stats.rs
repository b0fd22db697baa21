//! What the private benchmark Redis did: commands per command name, and memory used.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

pub struct Redis {
    conn: redis::Connection,
    /// host:port, for the raw MONITOR connection.
    address: String,
}

/// Ends a MONITOR capture: the monitor reader stops at the command carrying it.
const MONITOR_END: &str = "bench-harness-monitor-end";

/// Calls per command name (lowercase, e.g. "evalsha"), from `INFO commandstats`.
pub type CommandCounts = BTreeMap<String, u64>;

impl Redis {
    pub fn connect(url: &str) -> Redis {
        let client = redis::Client::open(url).expect("valid Redis URL");
        let address = url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .expect("host:port in the Redis URL")
            .to_owned();
        Redis {
            conn: client
                .get_connection()
                .expect("connect to the benchmark Redis"),
            address,
        }
    }

    fn info(&mut self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn)
            .expect("INFO")
    }

    /// Command counts so far. The `INFO` calls this harness makes are left out.
    pub fn command_counts(&mut self) -> CommandCounts {
        self.info("commandstats")
            .lines()
            .filter_map(|line| line.strip_prefix("cmdstat_"))
            .filter_map(|line| {
                let (name, stats) = line.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .filter(|(name, _)| name != "info" && name != "flushdb" && name != "dbsize")
            .collect()
    }

    /// How many commands clients sent while `work` ran: round trips, as opposed to the
    /// commands Lua scripts run inside Redis (which `INFO` counts alike). Uses MONITOR,
    /// which slows Redis down, so it runs apart from the timed wrk runs.
    pub fn client_commands_during(&mut self, work: impl FnOnce()) -> u64 {
        let stream = TcpStream::connect(&self.address).expect("MONITOR connection");
        let mut writer = stream.try_clone().unwrap();
        writer.write_all(b"MONITOR\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), "+OK", "MONITOR refused");
        let counter = std::thread::spawn(move || {
            let mut sent = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 || line.contains(MONITOR_END) {
                    return sent;
                }
                // Script commands show as `[0 lua]`; a client's as `[0 127.0.0.1:port]`.
                if !line.contains(" lua] ") {
                    sent += 1;
                }
            }
        });
        work();
        let _: String = redis::cmd("ECHO")
            .arg(MONITOR_END)
            .query(&mut self.conn)
            .expect("ECHO");
        counter.join().expect("MONITOR reader")
    }

    /// CPU time the Redis server has used (user + system), in microseconds.
    pub fn cpu_micros(&mut self) -> u64 {
        let info = self.info("cpu");
        let seconds = |name| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in INFO cpu"))
        };
        ((seconds("used_cpu_user") + seconds("used_cpu_sys")) * 1e6) as u64
    }

    pub fn used_memory(&mut self) -> u64 {
        stat_value(&self.info("memory"), "used_memory")
    }

    /// Empties the benchmark server (ours alone, started by run.sh) between modes, so no
    /// mode pays for the keys another left behind.
    pub fn flush(&mut self) {
        let _: () = redis::cmd("FLUSHDB")
            .query(&mut self.conn)
            .expect("FLUSHDB");
    }
}

fn stat_value(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in INFO"))
}

/// `after - before`, per command, dropping commands that did not run.
pub fn difference(before: &CommandCounts, after: &CommandCounts) -> CommandCounts {
    after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, calls)| *calls > 0)
        .collect()
}
