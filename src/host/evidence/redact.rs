//! Command lines without their secrets: a report goes to mailboxes and chat rooms, and a
//! service's command line may carry a password (`--password=hunter2`, `redis-server
//! --requirepass s3cret`, `postgres://app:pw@db/app`).

/// Words that mark an option or a key as a secret's.
const SECRET_WORDS: [&str; 9] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "cookie",
    "private",
];

/// What a hidden value is shown as.
const HIDDEN: &str = "***";

/// `args` joined by spaces, with the value of every secret-looking option or key replaced
/// (`--password=***`, `--requirepass ***`, `token=***`), a URL's password replaced
/// (`postgres://app:***@db`), and every one of `hidden` (at least 4 characters) replaced.
pub(super) fn command_line(args: &[String], hidden: &[String]) -> String {
    let mut shown = Vec::with_capacity(args.len());
    let mut next_is_secret = false;
    for arg in args {
        if std::mem::take(&mut next_is_secret) && !arg.starts_with('-') {
            shown.push(HIDDEN.to_owned());
            continue;
        }
        let arg = match arg.split_once('=') {
            Some((key, _)) if secret_word(key) => format!("{key}={HIDDEN}"),
            // An option that names a secret takes it as the next argument.
            None if arg.starts_with('-') && secret_word(arg) => {
                next_is_secret = true;
                arg.clone()
            }
            Some(_) | None => arg.clone(),
        };
        shown.push(url_password(&arg));
    }
    let mut line = shown.join(" ");
    for value in hidden.iter().filter(|value| value.chars().count() >= 4) {
        line = line.replace(value.as_str(), HIDDEN);
    }
    line
}

/// Whether an option or key names a secret: `--password`, `-requirepass`, `API_TOKEN`.
fn secret_word(key: &str) -> bool {
    let key = key.trim_start_matches('-').to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| key.contains(word))
}

/// `text` with the password of a URL in it (`scheme://user:password@host`) replaced.
fn url_password(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_end = rest.find(['/', '?', '#', ' ']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:{HIDDEN}{}",
            &text[..authority_start],
            &rest[..colon],
            &rest[at..]
        ),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str], hidden: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
        let hidden: Vec<String> = hidden.iter().map(|&value| value.to_owned()).collect();
        command_line(&args, &hidden)
    }

    #[test]
    fn secrets_in_options_keys_and_urls_are_not_shown() {
        assert_eq!(
            line(&["/usr/bin/app", "--password=hunter2", "--port=80"], &[]),
            "/usr/bin/app --password=*** --port=80"
        );
        assert_eq!(
            line(
                &["redis-server", "--requirepass", "s3cret", "--port", "6379"],
                &[]
            ),
            "redis-server --requirepass *** --port 6379"
        );
        assert_eq!(
            line(&["env", "API_TOKEN=abc", "AWS_SECRET_ACCESS_KEY=x"], &[]),
            "env API_TOKEN=*** AWS_SECRET_ACCESS_KEY=***"
        );
        assert_eq!(
            line(&["worker", "--db=postgres://app:pw@db:5432/app?x=1"], &[]),
            "worker --db=postgres://app:***@db:5432/app?x=1"
        );
        assert_eq!(
            line(&["app", "--verbose", "serve"], &[]),
            "app --verbose serve"
        );
    }

    #[test]
    fn values_the_config_names_are_not_shown_anywhere_in_the_line() {
        assert_eq!(
            line(&["app", "--db-url", "x-Zq9wPa-y"], &["Zq9wPa"]),
            "app --db-url x-***-y"
        );
        // Too short to hide without hiding every "a" of the line.
        assert_eq!(line(&["app", "a"], &["a"]), "app a");
    }
}
