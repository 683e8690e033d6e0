//! The `nexusd` binary: everything is in the library (`commands::main` parses the command line,
//! reads the configuration, starts logging and dispatches), so tests and commands share it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    nexusd::commands::main()
}
