//! The `ssehub` binary: parse flags, bind, print the address, serve until signalled.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ssehub::{Config, Server};

fn main() -> ExitCode {
    let config = Config::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    env_logger::Builder::new().parse_filters(&filter).format_timestamp_millis().init();
    let open_files = ssehub::sys_open_file_limit();
    let server = match Server::bind(config.settings(open_files)) {
        Ok(server) => server,
        Err(error) => {
            log::error!("cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts wait for this line to learn the port.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {}", server.local_addr());
    let _ = stdout.flush();
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
