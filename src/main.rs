//! The `kappa` binary: parse the command line, set up logging, dispatch.

use clap::Parser;
use kappa::cli::{Cli, dispatch};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One line naming what is wrong, not a usage dump.
            // One line naming what is wrong (and the values that would do), not a usage dump.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let possible = text
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("[possible values:"))
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            eprintln!(
                "{}{possible} (see kappa --help)",
                kappa::cli::text::printable(first)
            );
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,kappa=info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        kappa::cli::LogFormat::Json => logs.json().with_current_span(false).init(),
        kappa::cli::LogFormat::Human => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    // A panic on this thread (redb panics on some damaged pages of a store) ends the
    // command with one line and exit code 1, as every other failure does; other threads'
    // panics are reported by whoever joins them, with the default message.
    let main_thread = std::thread::current().id();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == main_thread {
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!(
                "error: kappa stopped on an internal error ({}{at}); a damaged store ends like this: restore it from a copy, or rebuild its versions from the log with `kappa replay --from earliest --version NEW`",
                kappa::cli::text::printable(&what.replace('\n', " "))
            );
            std::process::exit(1);
        }
        default_hook(info);
    }));
    if let Err(e) = dispatch(&cli) {
        // A closed pipe (`kappa export | head`) is the reader's choice, not an error.
        let broken_pipe = |c: &(dyn std::error::Error + 'static)| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                || c.downcast_ref::<serde_json::Error>()
                    .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
        };
        if e.chain().any(broken_pipe) {
            std::process::exit(0);
        }
        // Each cause once: an error whose text already includes its source's (thiserror's
        // "I/O error on FILE: {source}") does not repeat it.
        let mut msg = String::new();
        for cause in e.chain().map(ToString::to_string) {
            if !msg.contains(&cause) {
                if !msg.is_empty() {
                    msg.push_str(": ");
                }
                msg.push_str(&cause);
            }
        }
        // One line, except a configuration file's syntax error, which keeps the line,
        // column and caret the TOML parser drew.
        if e.chain()
            .any(|c| c.downcast_ref::<kappa::config::ConfigError>().is_some())
        {
            eprintln!(
                "error: {}",
                msg.lines()
                    .map(kappa::cli::text::printable)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        } else {
            eprintln!(
                "error: {}",
                kappa::cli::text::printable(&msg.replace('\n', " "))
            );
        }
        std::process::exit(1);
    }
}
