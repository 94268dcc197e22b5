//! Progress bars and log lines on one terminal. While a bar is shown, every log
//! line is written with the bar suspended (the bar's line cleared, the log line
//! printed, the bar drawn again below it), so neither tears the other. Off a
//! terminal no bar is shown at all and log lines go straight to stderr.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// The bar on screen, if any.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn shown() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    SHOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bar on stderr for as long as this lives; cleared when dropped.
pub struct Shown(ProgressBar);

impl Shown {
    pub fn bar(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.0.finish_and_clear();
        *shown() = None;
    }
}

/// Shows `bar` (a terminal only: `None` otherwise).
pub fn show(bar: ProgressBar) -> Option<Shown> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    *shown() = Some(bar.clone());
    Some(Shown(bar))
}

/// A spinner with `message` on a terminal; elsewhere the message is logged.
pub fn spinner(message: &str) -> Option<Shown> {
    if !std::io::stderr().is_terminal() {
        // Named for what it reports, not for this module.
        tracing::info!(target: "tessera::progress", "{message}");
        return None;
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(message.to_string());
    spinner.enable_steady_tick(Duration::from_millis(100));
    show(spinner)
}

/// A byte-count bar with `message`, on a terminal.
pub fn bytes_bar(total: u64, message: String) -> Option<Shown> {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {binary_bytes}/{binary_total_bytes} ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message);
    show(bar)
}

/// Where the log writes: stderr, with any shown bar suspended around each line
/// (the log formats a whole line before writing it).
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = shown().clone();
        let write = || std::io::stderr().lock().write_all(buf);
        match bar {
            Some(bar) if !bar.is_finished() => bar.suspend(write)?,
            _ => write()?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
