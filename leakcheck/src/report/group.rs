//! Survivors that read alike, grouped: the text report and the JSON report show each group once.

use std::collections::BTreeMap;

use super::normalized::normalize;
use super::{Kind, Status, Survivor};

/// What tells survivors apart: status, kind, component, site, and for tasks the user's frame
/// and the await point (tasks spawned through one executor function share a site). Every part
/// is normalized, so groups and their order are the same on every run.
type GroupKey = (bool, Kind, String, String, String, String, String);

fn group_key(s: &Survivor) -> GroupKey {
    let status = match &s.status {
        Status::Known { rule, .. } => rule.clone(),
        Status::Unknown => String::new(),
    };
    let site = match s.kind {
        Kind::Task => s
            .spawn_location
            .as_deref()
            .map(normalize)
            .unwrap_or_else(|| normalize(&s.description)),
        _ => normalize(&s.description),
    };
    let user = s
        .user_frame
        .as_ref()
        .map(|f| normalize(&f.display()))
        .unwrap_or_default();
    let waiting = s
        .await_trace
        .as_ref()
        .map(|t| {
            t.leaves
                .iter()
                .map(|l| {
                    format!(
                        "{} {}",
                        l.resource.as_deref().unwrap_or(""),
                        l.frames.first().map(|f| f.display()).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .map(|w| normalize(&w))
        .unwrap_or_default();
    (
        s.status != Status::Unknown,
        s.kind,
        s.component.clone(),
        status,
        site,
        user,
        waiting,
    )
}

/// `survivors` in groups, ordered by their keys (the same order on every run); members keep
/// their order.
pub(crate) fn groups(survivors: &[Survivor]) -> Vec<Vec<&Survivor>> {
    let mut by: BTreeMap<GroupKey, Vec<&Survivor>> = BTreeMap::new();
    for s in survivors {
        by.entry(group_key(s)).or_default().push(s);
    }
    by.into_values().collect()
}
