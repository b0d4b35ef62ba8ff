//! Many questions in one round: the `Get`s of many units sent before any reply is awaited
//! (`call_many`), the dashboard's and the probes' overview (`ListUnitsByNames` with the
//! `OnFailure=` of each), when units became active, and a unit's string properties.

use std::fmt::Write as _;
use std::time::Duration;

use futures_lite::StreamExt;
use zbus::zvariant::OwnedValue;

use super::{ActiveState, CALLS_IN_FLIGHT, Systemd, SystemdError, call_error, with_timeout};

/// A `Get` of `(interface, property)` on `unit`'s object, for `call_many`.
pub(super) fn get_property(
    unit: &str,
    (interface, property): (&str, &str),
) -> zbus::Result<zbus::Message> {
    zbus::Message::method_call(unit_object_path(unit), "Get")?
        .destination("org.freedesktop.systemd1")?
        .interface("org.freedesktop.DBus.Properties")?
        .build(&(interface, property))
}

/// systemd's object path for a unit (sd_bus_path_encode): every byte that is not an ASCII
/// letter or digit becomes `_xx`. Asking for properties on it loads the unit if needed.
pub(crate) fn unit_object_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    if unit.is_empty() {
        path.push('_');
    }
    for byte in unit.bytes() {
        if byte.is_ascii_alphanumeric() {
            path.push(char::from(byte));
        } else {
            let _ = write!(path, "_{byte:02x}");
        }
    }
    path
}

/// One unit as the dashboard sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnitOverview {
    /// The unit's own name (an alias that was asked for resolves to it).
    pub id: String,
    /// `loaded`, `not-found`, `masked`, …
    pub load_state: String,
    pub active_state: ActiveState,
    pub sub_state: String,
    /// The units its `OnFailure=` starts.
    pub on_failure: Vec<String>,
    /// A job of systemd's is queued or running for it (a start not begun yet included).
    pub job_queued: bool,
}

impl UnitOverview {
    /// A row of `ListUnitsByPatterns` (a loaded unit; its `OnFailure=` is not in the row).
    pub(super) fn of_row(row: &super::proxy::UnitRow) -> UnitOverview {
        UnitOverview {
            id: row.0.clone(),
            load_state: row.2.clone(),
            active_state: ActiveState::parse(&row.3),
            sub_state: row.4.clone(),
            on_failure: Vec::new(),
            job_queued: row.7 != 0,
        }
    }
}

impl Systemd {
    /// Every unit in `units`, then every one in `listed_only`, in that order: one
    /// `ListUnitsByNames` for all and, alongside it, the `OnFailure=` of those in `units`; at
    /// most `timeout` in all. A unit systemd does not know has `load_state` `not-found`.
    pub(crate) fn overview(
        &self,
        units: &[&str],
        listed_only: &[&str],
        timeout: Duration,
    ) -> Result<Vec<UnitOverview>, SystemdError> {
        let calls = units
            .iter()
            .map(|unit| get_property(unit, ("org.freedesktop.systemd1.Unit", "OnFailure")))
            .collect::<zbus::Result<Vec<_>>>()
            .map_err(call_error("Get OnFailure"))?;
        let all: Vec<&str> = units.iter().chain(listed_only).copied().collect();
        let (listed, replies) = zbus::block_on(with_timeout(timeout, async {
            Ok(futures_lite::future::zip(
                self.manager.list_units_by_names(&all),
                self.call_many(calls, CALLS_IN_FLIGHT),
            )
            .await)
        }))?;
        let values: Vec<zbus::Result<OwnedValue>> = replies
            .into_iter()
            .map(|reply| reply.and_then(|reply| reply.body().deserialize::<OwnedValue>()))
            .collect();
        let listed = listed.map_err(call_error("ListUnitsByNames"))?;
        let mut values = values.into_iter();
        let mut overviews = Vec::with_capacity(all.len());
        for (index, unit) in all.iter().enumerate() {
            let on_failure = if index < units.len() {
                values.next().and_then(Result::ok)
            } else {
                None
            };
            // systemd answers in the order asked, with each unit's real name: an alias
            // (`sshd.service` for ssh.service) comes back under the name it stands for.
            let row = if listed.len() == all.len() {
                listed.get(index)
            } else {
                listed.iter().find(|row| row.0 == *unit)
            };
            overviews.push(UnitOverview {
                id: row.map_or_else(|| (*unit).to_owned(), |row| row.0.clone()),
                load_state: row.map_or_else(|| "not-found".to_owned(), |row| row.2.clone()),
                active_state: ActiveState::parse(row.map_or("inactive", |row| row.3.as_str())),
                sub_state: row.map_or_else(|| "dead".to_owned(), |row| row.4.clone()),
                on_failure: on_failure
                    .and_then(|value| <Vec<String>>::try_from(value).ok())
                    .unwrap_or_default(),
                job_queued: row.is_some_and(|row| row.7 != 0),
            });
        }
        Ok(overviews)
    }
}

impl Systemd {
    /// The dashboard's `overview`, without making systemd load what it has not loaded: the
    /// loaded units are listed as they are (one `ListUnitsByPatterns` of every loaded unit); a
    /// unit it has not loaded whose unit file is a plain file in its `UnitPath` is what systemd
    /// would load, `inactive`/`dead`; only the others (aliases, masks, missing files) are
    /// loaded to be listed. (At 300 units, half of them stopped, loading them for one answer
    /// was 90 of a dashboard's 120 ms; systemd unloads them again at once.) A unit file that
    /// would not load shows when the unit is started, and `check` loads every unit.
    pub(crate) fn overview_without_loading(
        &self,
        units: &[&str],
        listed_only: &[&str],
        timeout: Duration,
    ) -> Result<Vec<UnitOverview>, SystemdError> {
        let all: Vec<&str> = units.iter().chain(listed_only).copied().collect();
        let (loaded, unit_path) = zbus::block_on(with_timeout(timeout, async {
            Ok(futures_lite::future::zip(
                self.manager.list_units_by_patterns(&[], &[]),
                self.manager.unit_path(),
            )
            .await)
        }))?;
        let loaded = loaded.map_err(call_error("ListUnitsByPatterns"))?;
        let unit_path = unit_path.map_err(call_error("Get UnitPath"))?;
        let by_id: std::collections::HashMap<&str, &super::proxy::UnitRow> =
            loaded.iter().map(|row| (row.0.as_str(), row)).collect();
        let mut rows: Vec<Option<UnitOverview>> = all
            .iter()
            .map(|unit| match by_id.get(unit) {
                Some(row) => Some(UnitOverview::of_row(row)),
                None => plain_unit_file(unit, &unit_path).then(|| UnitOverview {
                    id: (*unit).to_owned(),
                    load_state: "loaded".to_owned(),
                    active_state: ActiveState::Inactive,
                    sub_state: "dead".to_owned(),
                    on_failure: Vec::new(),
                    job_queued: false,
                }),
            })
            .collect();
        let unknown: Vec<&str> = all
            .iter()
            .zip(&rows)
            .filter(|(_, row)| row.is_none())
            .map(|(unit, _)| *unit)
            .collect();
        // What remains, and the OnFailure= of `units`, the way `overview` asks.
        let mut asked = self.overview(units, &unknown, timeout)?.into_iter();
        let on_failures: Vec<Vec<String>> = asked
            .by_ref()
            .take(units.len())
            .map(|row| row.on_failure)
            .collect();
        for (row, unit) in rows.iter_mut().zip(&all) {
            if row.is_none() {
                *row = asked.next().or_else(|| {
                    Some(UnitOverview {
                        id: (*unit).to_owned(),
                        load_state: "not-found".to_owned(),
                        ..UnitOverview::default()
                    })
                });
            }
        }
        let mut rows: Vec<UnitOverview> = rows.into_iter().flatten().collect();
        for (row, on_failure) in rows.iter_mut().zip(on_failures) {
            row.on_failure = on_failure;
        }
        Ok(rows)
    }

    /// Sends `calls`, at most `limit` awaiting their replies at once, and returns the replies
    /// in the same order. One stream of incoming messages serves all of them (a zbus
    /// `call_method` per call would wake every pending call for every reply), and the limit
    /// keeps below what dbus-daemon accepts per connection. At 300 calls the time is systemd's
    /// and dbus-daemon's (~0.3 ms per `Get` here), not ours.
    pub(super) async fn call_many(
        &self,
        calls: Vec<zbus::Message>,
        limit: usize,
    ) -> Vec<zbus::Result<zbus::Message>> {
        // Subscribed before the first call is sent, so no reply can slip past.
        let mut incoming = zbus::MessageStream::from(&self.connection);
        let total = calls.len();
        let mut replies: Vec<Option<zbus::Result<zbus::Message>>> =
            (0..total).map(|_| None).collect();
        let mut pending = std::collections::HashMap::new();
        let mut queue = calls.into_iter().enumerate();
        let mut answered = 0;
        loop {
            while pending.len() < limit {
                let Some((index, call)) = queue.next() else {
                    break;
                };
                let serial = call.primary_header().serial_num();
                match self.connection.send(&call).await {
                    Ok(()) => {
                        pending.insert(serial, index);
                    }
                    Err(err) => {
                        replies[index] = Some(Err(err));
                        answered += 1;
                    }
                }
            }
            if answered == total {
                break;
            }
            let Some(message) = incoming.next().await else {
                break;
            };
            let Ok(message) = message else { continue };
            let reply_to = message.header().reply_serial();
            if let Some(index) = reply_to.and_then(|serial| pending.remove(&serial)) {
                replies[index] = Some(match message.message_type() {
                    zbus::message::Type::Error => Err(zbus::Error::from(message)),
                    _ => Ok(message),
                });
                answered += 1;
            }
        }
        replies
            .into_iter()
            .map(|reply| reply.unwrap_or_else(|| Err(zbus::Error::Failure("no reply".into()))))
            .collect()
    }
}

impl Systemd {
    /// When each of `units` last became active (`ActiveEnterTimestampMonotonic`, µs of
    /// CLOCK_MONOTONIC; `None` when never or unknown), in one batch of `Get`s, at most
    /// `timeout` in all.
    pub(super) fn active_since_within(
        &self,
        units: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Option<u64>>, SystemdError> {
        let gets: Vec<(&str, &str, &str)> = units
            .iter()
            .map(|unit| {
                (
                    *unit,
                    "org.freedesktop.systemd1.Unit",
                    "ActiveEnterTimestampMonotonic",
                )
            })
            .collect();
        Ok(self
            .get_many(&gets, timeout)?
            .into_iter()
            .map(|value| {
                value
                    .and_then(|value| u64::try_from(value).ok())
                    .filter(|since| *since > 0)
            })
            .collect())
    }

    /// `RestartFacts` of each of `units`: four `Get`s a unit, all in one batch, at most
    /// `timeout` in all. `RestartMode` is missing before systemd 254 (`None`); a unit whose
    /// other answers are missing is `None`.
    pub(super) fn restart_facts_of(
        &self,
        units: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Option<super::RestartFacts>>, SystemdError> {
        const UNIT: &str = "org.freedesktop.systemd1.Unit";
        const SERVICE: &str = "org.freedesktop.systemd1.Service";
        let gets: Vec<(&str, &str, &str)> = units
            .iter()
            .flat_map(|unit| {
                [
                    (*unit, UNIT, "InvocationID"),
                    (*unit, SERVICE, "NRestarts"),
                    (*unit, SERVICE, "Restart"),
                    (*unit, SERVICE, "RestartMode"),
                ]
            })
            .collect();
        let values = self.get_many(&gets, timeout)?;
        Ok(values
            .chunks(4)
            .map(|four| {
                let text = |value: &Option<OwnedValue>| {
                    value
                        .as_ref()
                        .and_then(|value| String::try_from(value.try_clone().ok()?).ok())
                };
                let invocation = four[0]
                    .as_ref()
                    .and_then(|value| <Vec<u8>>::try_from(value.try_clone().ok()?).ok())?;
                let n_restarts = four[1]
                    .as_ref()
                    .and_then(|value| u32::try_from(value).ok())?;
                Some(super::RestartFacts {
                    invocation_id: crate::host::hex(&invocation),
                    n_restarts,
                    restart: text(&four[2])?,
                    restart_mode: text(&four[3]),
                })
            })
            .collect())
    }

    /// `Get`s of (unit, interface, property), sent as one batch and answered in order; `None`
    /// for one that could not be read. At most `timeout` in all.
    pub(super) fn get_many(
        &self,
        gets: &[(&str, &str, &str)],
        timeout: Duration,
    ) -> Result<Vec<Option<OwnedValue>>, SystemdError> {
        let calls = gets
            .iter()
            .map(|(unit, interface, property)| get_property(unit, (interface, property)))
            .collect::<zbus::Result<Vec<_>>>()
            .map_err(call_error("Get"))?;
        let replies = zbus::block_on(with_timeout(timeout, async {
            Ok(self.call_many(calls, CALLS_IN_FLIGHT).await)
        }))?;
        Ok(replies
            .into_iter()
            .map(|reply| {
                reply
                    .and_then(|reply| reply.body().deserialize::<OwnedValue>())
                    .ok()
            })
            .collect())
    }
}

/// True when `unit`'s unit file (a template instance's: its template's, unless it has one of
/// its own) is first found in `unit_path` as a plain file: systemd would load it from there
/// (a symlink is an alias or a mask, which only systemd resolves).
fn plain_unit_file(unit: &str, unit_path: &[String]) -> bool {
    let template = unit
        .split_once('@')
        .and_then(|(prefix, rest)| Some(format!("{prefix}@.{}", rest.rsplit_once('.')?.1)));
    for name in std::iter::once(unit.to_owned()).chain(template) {
        for dir in unit_path {
            if let Ok(meta) = std::fs::symlink_metadata(std::path::Path::new(dir).join(&name)) {
                return meta.is_file();
            }
        }
    }
    false
}
