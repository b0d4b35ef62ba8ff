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

/// Options whose next word is a password or a credential in common tools (`mysql -p`,
/// `redis-cli -a`, `curl -u user:pw`, `curl -H "Authorization: …"`), beside the options that
/// name a secret.
const CREDENTIAL_OPTIONS: [&str; 6] = ["-p", "-a", "-u", "-H", "--header", "--user"];

/// `args` joined by spaces, each argument taken word by word (a process may have set its
/// title as one argument), with every secret replaced by `***`: the value of an option or a
/// `key=value` pair (also inside a value or a query string: `--url=https://h/?token=***`)
/// whose name says secret, the word after such an option or after a credential option
/// ([`CREDENTIAL_OPTIONS`]), an attached `-p<password>`, the word after `Bearer`/`Basic`, a
/// URL's password (`postgres://app:***@db`), and every one of `hidden` (at least 4
/// characters).
pub(super) fn command_line(args: &[String], hidden: &[String]) -> String {
    let mut shown = Vec::with_capacity(args.len());
    // A credential option's value is its whole next argument (`-H "X-Api-Key: k"`).
    let mut next_arg_is_secret = false;
    for arg in args {
        if std::mem::take(&mut next_arg_is_secret) {
            shown.push(HIDDEN.to_owned());
            continue;
        }
        let mut next_is_secret = false;
        let mut rest_is_secret = false;
        for word in arg.split_whitespace() {
            let hide = rest_is_secret || std::mem::take(&mut next_is_secret);
            // A header-like `X-Api-Key: …` or `Authorization: token …`: all that follows.
            rest_is_secret |= word.ends_with(':') && secret_word(word);
            if hide {
                shown.push(HIDDEN.to_owned());
                continue;
            }
            next_is_secret = takes_a_secret(word);
            shown.push(url_passwords(&pairs(&attached_password(word))));
        }
        next_arg_is_secret = next_is_secret;
    }
    hide_values(&shown.join(" "), hidden)
}

/// `text` with every one of `hidden` (at least 4 characters: a shorter one would hide every
/// "a" of the text) replaced by `***`.
pub(crate) fn hide_values(text: &str, hidden: &[String]) -> String {
    hidden
        .iter()
        .filter(|value| value.chars().count() >= 4)
        .fold(text.to_owned(), |text, value| {
            text.replace(value.as_str(), HIDDEN)
        })
}

/// Whether the word after `word` is a secret: an option naming one (`--requirepass`), a
/// credential option, or an authorization scheme.
fn takes_a_secret(word: &str) -> bool {
    (word.starts_with('-') && !word.contains('=') && secret_word(word))
        || CREDENTIAL_OPTIONS.contains(&word)
        || matches!(word.to_ascii_lowercase().as_str(), "bearer" | "basic")
}

/// `-phunter2` (mysql's attached password) as `-p***`; `-p8080` stays.
fn attached_password(word: &str) -> String {
    match word.strip_prefix("-p") {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('-') && rest.parse::<u32>().is_err() =>
        {
            format!("-p{HIDDEN}")
        }
        _ => word.to_owned(),
    }
}

/// `word` with the value of every `key=value` pair whose key names a secret replaced; pairs
/// are separated by `&`, `,`, `;` or `?`, so those inside a value count too
/// (`--url=https://h/?access_token=***`, `--opts=user=a,password=***`).
fn pairs(word: &str) -> String {
    const SEPARATORS: [char; 4] = ['&', ',', ';', '?'];
    word.split_inclusive(SEPARATORS)
        .map(|segment| match segment.strip_suffix(SEPARATORS) {
            Some(pair) => format!("{}{}", redact_pair(pair), &segment[pair.len()..]),
            None => redact_pair(segment),
        })
        .collect()
}

/// `key=value` (the key may follow other `=`: `--opts=password=x`): the value of the last key
/// that names a secret replaced.
fn redact_pair(segment: &str) -> String {
    let mut parts = segment.split('=').collect::<Vec<_>>();
    if parts.len() < 2 {
        return segment.to_owned();
    }
    if let Some(at) = (0..parts.len() - 1).find(|&at| secret_word(parts[at])) {
        parts.truncate(at + 1);
        return format!("{}={HIDDEN}", parts.join("="));
    }
    segment.to_owned()
}

/// Whether an option or key names a secret: `--password`, `-requirepass`, `API_TOKEN`.
fn secret_word(key: &str) -> bool {
    let key = key.trim_start_matches('-').to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| key.contains(word))
}

/// `text` with the credentials of every URL in it replaced: the password of
/// `scheme://user:password@host`, a token alone as user (`https://TOKEN@github.com`), and the
/// password of a DSN without a scheme (`app:password@tcp(db)/app`).
fn url_passwords(text: &str) -> String {
    if !text.contains("://") {
        return dsn_password(text);
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let authority_end = rest.find(['/', '?', '#', ' ']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.push_str(&rest[..colon]);
                out.push(':');
            }
            out.push_str(HIDDEN);
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

/// `user:password@host…` with no scheme (Go's MySQL DSN, a `--dsn=` value): the password
/// replaced.
fn dsn_password(word: &str) -> String {
    let Some(at) = word.find('@') else {
        return word.to_owned();
    };
    let start = word[..at].rfind(['=', ' ']).map_or(0, |at| at + 1);
    match word[start..at].find(':') {
        Some(colon) => format!("{}:{HIDDEN}{}", &word[..start + colon], &word[at..]),
        None => word.to_owned(),
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

    /// What an adversarial reading found: credentials of common tools, secrets inside values,
    /// several URLs in one argument, a process title set as one argument.
    #[test]
    fn credentials_of_common_tools_and_nested_secrets_are_not_shown() {
        for (args, shown) in [
            (&["mysql", "-phunter2", "-P3306"][..], "mysql -p*** -P3306"),
            (&["memcached", "-p", "11211"][..], "memcached -p ***"),
            (&["redis-cli", "-a", "hunter2"][..], "redis-cli -a ***"),
            (
                &[
                    "curl",
                    "-u",
                    "me:hunter2",
                    "-H",
                    "Authorization: Bearer hunter2",
                ][..],
                "curl -u *** -H ***",
            ),
            (
                &["w", "--url=https://h/x?access_token=hunter2&page=2"][..],
                "w --url=https://h/x?access_token=***&page=2",
            ),
            (
                &["w", "--opts=user=a,password=hunter2,x=1"][..],
                "w --opts=user=a,password=***,x=1",
            ),
            (
                &["w", "--dbs=redis://a:hunter2@h,pg://c:hunter3@h"][..],
                "w --dbs=redis://a:***@h,pg://c:***@h",
            ),
            (
                &["worker --token hunter2 --queue q"][..],
                "worker --token *** --queue q",
            ),
            (&["w", "--password", "-hunter2"][..], "w --password ***"),
            (&["nginx: worker process"][..], "nginx: worker process"),
            (
                &["curl", "-H", "X-Api-Key: hunter2", "https://h"][..],
                "curl -H *** https://h",
            ),
            (
                &["agent --header Authorization: token hunter2"][..],
                "agent --header *** *** ***",
            ),
            (
                &["git", "clone", "https://hunter2@github.com/o/r"][..],
                "git clone https://***@github.com/o/r",
            ),
            (
                &["app", "-dsn", "app:hunter2@tcp(db:3306)/app"][..],
                "app -dsn app:***@tcp(db:3306)/app",
            ),
            (
                &["w", "--db=pg://u:hun,ter2@h/db"][..],
                "w --db=pg://u:***@h/db",
            ),
        ] {
            let args: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
            let line = command_line(&args, &[]);
            assert_eq!(line, shown);
            assert!(!line.contains("hunter"), "{line}");
        }
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
