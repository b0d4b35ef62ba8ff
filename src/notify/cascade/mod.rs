//! Cascades: when `cascade.services` monitored services fail within `cascade.within` (default
//! 3 within 60 s), each one is still healed at once, but their reports go out as one mail.
//!
//! Every run that may mail joins the ledger (`<state>/cascade.json`, under a lock) while it
//! heals, in a background thread: the burst whose window is open, or a new one. When its
//! report is ready:
//! - alone in its burst so far, or with companions that are already over (their runs ended,
//!   their reports went out on their own), the report is mailed at once: a lone failure never
//!   waits, and only services failing together now hold a report;
//! - otherwise it is held: composed into `outbox/held/` and named in the ledger.
//!
//! A burst is complete when its window has closed and none of its runs is still running (a run
//! whose process is gone counts as finished). A burst dated in the future (the clock was
//! stepped back) has its window closed. Whoever sees it complete delivers it: the last
//! run to finish, the transient timer set for the window's end, or the periodic `flush`. With
//! at least `cascade.services` services it becomes one cascade mail; with fewer, the held
//! mails go out one by one. A held report therefore waits until the window closes and the
//! burst's slowest run has ended (bounded by that heal unit's `TimeoutStartSec=`), or, when no
//! timer could be set, until the next flush (every 5 minutes).
//!
//! Here the burst model (a burst, its members, when it is complete); [`ledger`] keeps the
//! bursts on disk under a lock and records a run's arrival; [`release`] mails a report now or
//! holds it, and delivers a complete burst; [`timer`] sets the delivery for the window's end.

mod ledger;
mod release;
mod timer;

pub(crate) use ledger::arrive;
pub(crate) use release::Bursts;
pub(crate) use timer::schedule_delivery;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::ui::when::Timestamp;

/// `cascade:` when the config does not say: 3 services within 60 s.
pub(crate) const DEFAULT_SERVICES: u32 = 3;
pub(crate) const DEFAULT_WITHIN: Duration = Duration::from_secs(60);
/// Bursts older than this leave the ledger whatever their state.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The cascade rule in force; `None` when a burst can never fold (`services` below 2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    pub services: usize,
    pub within: Duration,
}

impl Rule {
    pub(crate) fn of(config: &Config) -> Option<Rule> {
        let (services, within) = config
            .cascade
            .as_ref()
            .map_or((DEFAULT_SERVICES, DEFAULT_WITHIN), |cascade| {
                (cascade.services, cascade.within.into())
            });
        (services >= 2).then_some(Rule {
            services: services as usize,
            within,
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    bursts: Vec<Burst>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Burst {
    /// When its first run joined (to the millisecond); also its name.
    started_at: Timestamp,
    members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    service: String,
    pid: u32,
    /// The process' start time (clock ticks after boot): a reused PID is not this run.
    since: u64,
    #[serde(flatten)]
    state: MemberState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum MemberState {
    /// Healing; its report is not ready.
    Running,
    /// Finished with nothing to mail (healthy, dry run, mail off).
    Quiet,
    /// Its mail waits in `outbox/held/<stem>.eml`, its report's JSON beside it.
    Held { stem: String },
    /// Its report went out (on its own, or in the cascade mail).
    Mailed,
}

/// A run's place in the ledger.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    burst: Timestamp,
    pid: u32,
}

/// What became of a report that was ready.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Alone in its burst: the caller mails it now.
    MailNow,
    /// Held; the burst is delivered later (the timer, the last run, or flush).
    Held { deliver_in: Option<Duration> },
    /// Held, and this run completed the burst: these messages went into the outbox.
    Delivered(Vec<String>),
}

/// How far in the future a burst's start may be and still count as now: runs on one host
/// read one clock, so anything beyond a moment is a clock that was stepped back.
const CLOCK_SLACK: Duration = Duration::from_secs(2);

fn now() -> SystemTime {
    SystemTime::now()
}

/// When `pid` started, in clock ticks after boot (`/proc/<pid>/stat` field 22).
fn started_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(member: &Member) -> bool {
    started_ticks(member.pid) == Some(member.since)
}

impl Burst {
    fn window_end(&self, rule: Rule) -> SystemTime {
        self.started_at.time() + rule.within
    }

    /// Its window is open at `now`. A burst that started in the future was written before the
    /// clock was stepped back: its window is over, or it would hold every report for as long
    /// as the step.
    fn window_open(&self, rule: Rule, now: SystemTime) -> bool {
        let start = self.started_at.time();
        start <= now + CLOCK_SLACK && now < start + rule.within
    }

    /// How long until its window closes, at most the window itself.
    fn closes_in(&self, rule: Rule, now: SystemTime) -> Option<Duration> {
        self.window_open(rule, now)
            .then(|| self.window_end(rule).duration_since(now).ok())
            .flatten()
            .map(|left| left.min(rule.within))
    }

    /// Its window has closed and none of its runs is still healing.
    fn complete(&self, rule: Rule, now: SystemTime, alive: &dyn Fn(&Member) -> bool) -> bool {
        !self.window_open(rule, now)
            && !self
                .members
                .iter()
                .any(|m| matches!(m.state, MemberState::Running) && alive(m))
    }

    /// Services other than the one of run `pid` failing together with it now: still healing,
    /// or held waiting for the burst. One whose report already went out on its own is over:
    /// it is counted in the cascade mail if one forms, but holds nobody's report for one that
    /// may never form. (A service that fails again is no cascade.)
    fn failing_now(&self, pid: u32, alive: &dyn Fn(&Member) -> bool) -> BTreeSet<&str> {
        let mine = self
            .members
            .iter()
            .find(|m| m.pid == pid)
            .map(|m| m.service.as_str());
        self.members
            .iter()
            .filter(|m| Some(m.service.as_str()) != mine)
            .filter(|m| match m.state {
                MemberState::Running => alive(m),
                MemberState::Quiet | MemberState::Mailed => false,
                MemberState::Held { .. } => true,
            })
            .map(|m| m.service.as_str())
            .collect()
    }

    /// Whether a report of this burst is still held.
    fn holds(&self) -> bool {
        self.members
            .iter()
            .any(|m| matches!(m.state, MemberState::Held { .. }))
    }

    fn member(&mut self, pid: u32) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.pid == pid)
    }
}

#[cfg(test)]
mod tests {
    use super::ledger::{LEDGER, with_ledger};
    use super::timer::flushes_the_same;
    use super::*;
    use crate::notify::email::{Composed, Outbox};
    use crate::report::{Renderer, Report};
    use crate::state::StateDir;

    #[test]
    fn the_installed_flush_unit_delivers_when_it_flushes_the_same_outbox() {
        let argv = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        let run = argv(&[
            "/usr/bin/selfheal",
            "--config",
            "/etc/selfheal/selfheal.yml",
            "--state-dir",
            "/var/lib/selfheal",
            "flush",
        ]);
        assert!(flushes_the_same(
            &argv(&["/usr/bin/selfheal", "flush"]),
            &run
        ));
        assert!(flushes_the_same(
            &argv(&[
                "/usr/local/bin/selfheal",
                "--config=/etc/selfheal/selfheal.yml",
                "flush"
            ]),
            &run
        ));
        assert!(!flushes_the_same(
            &argv(&["/usr/bin/selfheal", "--config=/srv/other.yml", "flush"]),
            &run
        ));
        assert!(!flushes_the_same(
            &argv(&["/usr/bin/selfheal", "--state-dir=/tmp/state", "flush"]),
            &run
        ));
        assert!(!flushes_the_same(
            &argv(&["/usr/bin/selfheal", "digest"]),
            &run
        ));
    }

    fn member(service: &str, pid: u32, state: MemberState) -> Member {
        Member {
            service: service.into(),
            pid,
            since: 1,
            state,
        }
    }

    fn rule() -> Rule {
        Rule {
            services: 3,
            within: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_burst_completes_when_its_window_has_closed_and_no_run_still_heals() {
        let start = SystemTime::now();
        let burst = Burst {
            started_at: Timestamp::millis(start),
            members: vec![
                member("web", 1, MemberState::Mailed),
                member("api", 2, MemberState::Running),
            ],
        };
        let everyone_alive = |_: &Member| true;
        let nobody_alive = |_: &Member| false;
        let later = start + Duration::from_secs(61);
        assert!(!burst.complete(rule(), start, &nobody_alive), "window open");
        assert!(!burst.complete(rule(), later, &everyone_alive), "api heals");
        assert!(
            burst.complete(rule(), later, &nobody_alive),
            "api's process is gone"
        );
    }

    #[test]
    fn a_burst_dated_in_the_future_holds_nothing() {
        // Written an hour before the clock was stepped back by an hour.
        let now = SystemTime::now();
        let burst = Burst {
            started_at: Timestamp::millis(now + Duration::from_secs(3600)),
            members: vec![member("web", 1, MemberState::Held { stem: "w".into() })],
        };
        let nobody_alive = |_: &Member| false;
        assert!(!burst.window_open(rule(), now));
        assert!(burst.complete(rule(), now, &nobody_alive), "delivered now");
        assert_eq!(burst.closes_in(rule(), now), None);
        // A start a moment ahead (another run's clock read) is still now.
        let just_ahead = Burst {
            started_at: Timestamp::millis(now + Duration::from_millis(500)),
            ..burst
        };
        assert!(just_ahead.window_open(rule(), now));
        assert!(just_ahead.closes_in(rule(), now).unwrap() <= rule().within);
    }

    #[test]
    fn only_runs_failing_now_hold_a_report() {
        let burst = Burst {
            started_at: Timestamp::now_millis(),
            members: vec![
                member("web", 1, MemberState::Running),
                member("api", 2, MemberState::Quiet),
                member("db", 3, MemberState::Running),
                member("jobs", 4, MemberState::Held { stem: "j".into() }),
                member("mail", 5, MemberState::Mailed),
                member("cache", 6, MemberState::Running),
                member("web", 7, MemberState::Held { stem: "w".into() }),
            ],
        };
        // db's process is gone; mail's report went out on its own; web failing again is web.
        let alive = |m: &Member| m.pid != 3;
        assert_eq!(
            burst.failing_now(1, &alive).into_iter().collect::<Vec<_>>(),
            ["cache", "jobs"]
        );
    }

    #[test]
    fn a_report_goes_out_at_once_when_the_others_of_its_burst_are_already_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let config = Config::parse(
            "owner: ops@example.org\nemail: {transport: file, file_dir: /nonexistent}\nmonitored_services:\n  - name: web\n  - name: db\n",
            std::path::Path::new("t.yml"),
        )
        .unwrap();
        let me = std::process::id();
        let arrival = one_burst(
            &state,
            vec![
                // web failed half a minute ago; its report went out on its own.
                member("web", u32::MAX, MemberState::Mailed),
                Member {
                    since: started_ticks(me).unwrap(),
                    ..member("db", me, MemberState::Running)
                },
            ],
        );
        let renderer = Renderer::new(None);
        let bursts = Bursts {
            config: &config,
            state: &state,
            renderer: &renderer,
        };
        let report = Report::test_email(&config);
        let email = config.email.as_ref().unwrap();
        let composed =
            crate::notify::email::compose(email, config.owner.as_deref(), &renderer, &report)
                .unwrap();

        let fate = bursts.report_ready(&arrival, &report, &composed).unwrap();

        assert_eq!(
            fate,
            Fate::MailNow,
            "a lone escalation waits for no cascade"
        );
        assert!(Outbox::held(&state).unwrap().stems().is_empty());
    }

    /// A ledger of one burst, open now, with `members`; this process' arrival in it.
    fn one_burst(state: &StateDir, members: Vec<Member>) -> Arrival {
        let started_at = Timestamp::now_millis();
        with_ledger(state, |ledger| {
            ledger.bursts.push(Burst {
                started_at,
                members,
            });
            Ok(())
        })
        .unwrap();
        Arrival {
            burst: started_at,
            pid: std::process::id(),
        }
    }

    fn held_message(state: &StateDir, stem: &str) {
        let composed = Composed {
            stem: stem.to_owned(),
            envelope: crate::notify::email::Envelope {
                message_id: format!("<{stem}@test>"),
                subject: "s".into(),
                service: "web".into(),
                outcome: "resolved".into(),
                from: "a@b".into(),
                to: vec!["c@d".into()],
            },
            bytes: b"Subject: s\r\n\r\nbody".to_vec(),
        };
        let held = Outbox::held(state).unwrap();
        held.keep_report(stem, br#"{"service":"web"}"#).unwrap();
        drop(held.queue(&composed).unwrap());
    }

    #[test]
    fn a_torn_ledger_sends_what_it_held_instead_of_losing_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        held_message(&state, "r1");
        std::fs::write(state.root().join(LEDGER), b"{\"bursts\": [torn").unwrap();
        with_ledger(&state, |_| Ok(())).unwrap();
        assert!(Outbox::held(&state).unwrap().stems().is_empty());
        assert_eq!(Outbox::open(&state).unwrap().stems(), ["r1"]);
    }

    #[test]
    fn a_held_report_whose_companions_turned_out_healthy_goes_out_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let config = Config::parse(
            "monitored_services:\n  - name: web\n  - name: db\n",
            std::path::Path::new("t.yml"),
        )
        .unwrap();
        held_message(&state, "r1");
        let arrival = one_burst(
            &state,
            vec![
                member("web", u32::MAX, MemberState::Held { stem: "r1".into() }),
                member("db", std::process::id(), MemberState::Running),
            ],
        );
        let renderer = Renderer::new(None);
        let bursts = Bursts {
            config: &config,
            state: &state,
            renderer: &renderer,
        };
        // db's run found db healthy: web's report is alone, its window still open.
        assert_eq!(bursts.quiet(&arrival).unwrap(), ["r1"]);
        assert_eq!(Outbox::open(&state).unwrap().stems(), ["r1"]);
    }

    #[test]
    fn a_process_start_time_is_read_even_with_parentheses_in_the_name() {
        assert!(started_ticks(std::process::id()).is_some());
        assert_eq!(started_ticks(u32::MAX), None);
    }
}
