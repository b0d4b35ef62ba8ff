//! Terminal manners: colour only on a terminal and never with `NO_COLOR`, the terminal's
//! width for columns, and a note on stderr when something the user waits for is slow.
//! Pipes and files get plain text: no escape codes, no notes.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

/// What an output stream can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Terminal {
    /// The stream is a terminal (a person reads it as it comes).
    pub is_tty: bool,
    /// Colour is allowed: a terminal, and `NO_COLOR` is unset (no-color.org).
    pub color: bool,
    /// Columns, when the stream is a terminal that says.
    pub width: Option<usize>,
}

/// A colour for a word.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Paint {
    Green,
    Red,
    Yellow,
    Blue,
}

impl Terminal {
    /// What stdout can show.
    pub(crate) fn stdout() -> Terminal {
        Terminal::of(&std::io::stdout())
    }

    /// What stderr can show.
    pub(crate) fn stderr() -> Terminal {
        Terminal::of(&std::io::stderr())
    }

    /// Plain text: a pipe or a file.
    pub(crate) const PLAIN: Terminal = Terminal {
        is_tty: false,
        color: false,
        width: None,
    };

    fn of<S: IsTerminal + AsRawFd>(stream: &S) -> Terminal {
        if !stream.is_terminal() {
            return Terminal::PLAIN;
        }
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Terminal {
            is_tty: true,
            color: !no_color,
            width: width(stream.as_raw_fd()),
        }
    }

    /// `text` in `paint`, when colour is allowed.
    pub(crate) fn paint<'t>(&self, text: &'t str, paint: Paint) -> Cow<'t, str> {
        if !self.color {
            return Cow::Borrowed(text);
        }
        let code = match paint {
            Paint::Green => "32",
            Paint::Red => "31",
            Paint::Yellow => "33",
            Paint::Blue => "34",
        };
        Cow::Owned(format!("\x1b[{code}m{text}\x1b[0m"))
    }
}

/// The width of the terminal on `fd`, or `$COLUMNS`.
fn width(fd: std::os::fd::RawFd) -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass; `fd` is a terminal
    // that stays open for the call.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &raw mut size) } == 0;
    if ok && size.ws_col > 0 {
        return Some(usize::from(size.ws_col));
    }
    std::env::var("COLUMNS").ok()?.parse().ok()
}

/// `text` cut to `width` visible characters, with `…` where it was cut. Escape sequences
/// (selfheal's own colours) take no width and are never cut in half; a cut line ends its
/// colour.
pub(crate) fn fit(text: &str, width: usize) -> Cow<'_, str> {
    let mut visible = 0;
    let mut in_escape = false;
    let mut painted = false;
    for (at, c) in text.char_indices() {
        if in_escape {
            in_escape = !c.is_ascii_alphabetic();
            continue;
        }
        if c == '\x1b' {
            in_escape = true;
            painted = true;
            continue;
        }
        visible += 1;
        if visible == width {
            if strip_escapes(&text[at + c.len_utf8()..]).is_empty() {
                return Cow::Borrowed(text);
            }
            let reset = if painted { "\x1b[0m" } else { "" };
            return Cow::Owned(format!("{}…{reset}", &text[..at]));
        }
    }
    Cow::Borrowed(text)
}

/// `text` without escape sequences.
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut in_escape = false;
    for c in text.chars() {
        if in_escape {
            in_escape = !c.is_ascii_alphabetic();
        } else if c == '\x1b' {
            in_escape = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// A character text from outside must not carry to a terminal or a mail as it is: a control
/// character (escape sequences among them), or a bidirectional control that reorders what a
/// reader sees (U+202A–202E, U+2066–2069, U+200E/200F, U+061C: "Trojan Source").
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

/// Text from outside (a service's command line or journal line, kept in a summary) made safe
/// to print: control characters, escape sequences among them, and bidirectional controls are
/// shown as `\u{…}` instead of reaching the terminal.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if unsafe_char(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// `text`, cut to `chars` characters (with `…` when cut): a quote that keeps a report bounded.
pub(crate) fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `text` with every control character escaped except line breaks and tabs: for whole
/// texts (a report, a journal excerpt) whose lines are meant to stay lines.
pub(crate) fn printable_text(text: &str) -> Cow<'_, str> {
    let escaped = |c: char| unsafe_char(c) && c != '\n' && c != '\t';
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if escaped(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Says on stderr what selfheal is waiting for, once it has waited `after`, when stderr is a
/// terminal; says nothing when the wait ends sooner (drop it then) or nobody is watching.
pub(crate) struct SlowNotice {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowNotice {
    /// How long a person waits in silence before being told why.
    pub(crate) const AFTER: Duration = Duration::from_secs(1);

    pub(crate) fn new(what: impl Into<String>) -> SlowNotice {
        SlowNotice::after(SlowNotice::AFTER, what, Terminal::stderr().is_tty)
    }

    fn after(after: Duration, what: impl Into<String>, enabled: bool) -> SlowNotice {
        if !enabled {
            return SlowNotice {
                done: None,
                thread: None,
            };
        }
        let what = what.into();
        let (done, wait) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if wait.recv_timeout(after) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!("selfheal: {what}…");
            }
        });
        SlowNotice {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for SlowNotice {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_output_has_no_escape_codes() {
        assert_eq!(Terminal::PLAIN.paint("failed", Paint::Red), "failed");
        let tty = Terminal {
            is_tty: true,
            color: true,
            width: Some(80),
        };
        assert_eq!(tty.paint("failed", Paint::Red), "\x1b[31mfailed\x1b[0m");
        let no_color = Terminal {
            color: false,
            ..tty
        };
        assert_eq!(no_color.paint("failed", Paint::Red), "failed");
    }

    #[test]
    fn fits_text_to_a_width() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("exactly8", 8), "exactly8");
        assert_eq!(fit("a longer summary", 8), "a longe…");
        assert_eq!(fit("ééééé", 3), "éé…");
        // Colours take no width and are never cut in half; a cut line ends its colour.
        let painted = "\x1b[31mCRITICAL\x1b[0m";
        assert_eq!(fit(painted, 8), painted);
        assert_eq!(
            fit("ab \x1b[31mCRITICAL\x1b[0m", 6),
            "ab \x1b[31mCR…\x1b[0m"
        );
    }

    #[test]
    fn control_characters_from_outside_are_shown_not_obeyed() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(
            printable("held by pid 7 (evil \x1b]0;owned\x07)"),
            "held by pid 7 (evil \\u{1b}]0;owned\\u{7})"
        );
        // L12: a bidi override would show root "txt.exe" as "exe.txt".
        assert_eq!(printable("file \u{202E}txt.exe"), "file \\u{202e}txt.exe");
        assert_eq!(
            printable_text("a\n\u{2066}b\u{2069}\tc"),
            "a\n\\u{2066}b\\u{2069}\tc"
        );
    }

    #[test]
    fn a_wait_that_ends_soon_ends_its_notice_at_once() {
        let started = std::time::Instant::now();
        drop(SlowNotice::after(
            Duration::from_secs(30),
            "never said",
            true,
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
