//! The JSON report: the model, with survivors grouped as in the text (a count, a bounded list of
//! ids, each distinct backtrace and await trace once), so that 10 000 leaked tasks from one site
//! make a report of kilobytes, not megabytes.

use serde::Serialize;

use super::group::groups;
use super::{Kind, Lifecycle, Lingered, Note, Report, SettleStats, Status, Survivor};
use crate::tasks::{AwaitTrace, Frame};

/// At most this many ids (and names, and parents) are listed per group.
const IDS_PER_GROUP: usize = 32;

#[derive(Serialize)]
struct JsonReport<'a> {
    schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    clean: bool,
    kinds: &'a [Kind],
    survivors: Vec<JsonGroup<'a>>,
    lingered: &'a [Lingered],
    settle: &'a SettleStats,
    lifecycle: &'a Lifecycle,
    notes: &'a [Note],
}

/// Survivors that read alike: what they share, how many, and which.
#[derive(Serialize)]
struct JsonGroup<'a> {
    kind: Kind,
    component: &'a str,
    #[serde(flatten)]
    status: &'a Status,
    description: &'a str,
    count: usize,
    /// The first [`IDS_PER_GROUP`] ids, in order.
    ids: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spawn_location: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    names: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parents: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_frame: Option<&'a Frame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'a Frame>,
    #[serde(skip_serializing_if = "<[Frame]>::is_empty")]
    backtrace: &'a [Frame],
    #[serde(skip_serializing_if = "Option::is_none")]
    await_trace: Option<&'a AwaitTrace>,
    /// The oldest member's age.
    #[serde(skip_serializing_if = "Option::is_none")]
    age_ms: Option<f64>,
}

fn bounded(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable_by_key(|s| (s.len(), *s));
    v.dedup();
    v.truncate(IDS_PER_GROUP);
    v
}

fn group<'a>(members: &[&'a Survivor]) -> JsonGroup<'a> {
    let s = members[0];
    JsonGroup {
        kind: s.kind,
        component: &s.component,
        status: &s.status,
        description: &s.description,
        count: members.len(),
        ids: bounded(members.iter().map(|m| m.id.as_str()).collect()),
        spawn_location: s.spawn_location.as_deref(),
        names: bounded(members.iter().filter_map(|m| m.name.as_deref()).collect()),
        parents: bounded(members.iter().filter_map(|m| m.parent.as_deref()).collect()),
        user_frame: s.user_frame.as_ref(),
        via: s.via.as_ref(),
        backtrace: &s.backtrace,
        await_trace: s.await_trace.as_ref(),
        age_ms: members
            .iter()
            .filter_map(|m| m.age_ms)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b)))),
    }
}

impl Report {
    /// The report as JSON (pretty-printed), see [`SCHEMA_VERSION`](super::SCHEMA_VERSION):
    /// survivors grouped as in the text report.
    pub fn to_json(&self) -> String {
        let json = JsonReport {
            schema_version: self.schema_version,
            label: self.label.as_deref(),
            clean: self.clean,
            kinds: &self.kinds,
            survivors: groups(&self.survivors).iter().map(|g| group(g)).collect(),
            lingered: &self.lingered,
            settle: &self.settle,
            lifecycle: &self.lifecycle,
            notes: &self.notes,
        };
        serde_json::to_string_pretty(&json).expect("a report always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_survivors_of_one_site_make_one_small_group() {
        let mut r = Report::empty_for_tests();
        r.clean = false;
        for i in 0..10_000 {
            r.survivors.push(Survivor {
                kind: Kind::Task,
                id: i.to_string(),
                component: "app".into(),
                status: Status::Unknown,
                description: "task spawned at src/a.rs:1:1".into(),
                spawn_location: Some("src/a.rs:1:1".into()),
                name: None,
                parent: None,
                user_frame: None,
                via: None,
                backtrace: vec![
                    Frame {
                        function: "app::f".into(),
                        file: Some("src/a.rs".into()),
                        line: Some(1),
                    };
                    30
                ],
                await_trace: None,
                age_ms: Some(i as f64),
            });
        }
        let json = r.to_json();
        assert!(json.len() < 10_000, "{} bytes", json.len());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let g = &v["survivors"][0];
        assert_eq!(g["count"], 10_000);
        assert_eq!(g["ids"].as_array().unwrap().len(), IDS_PER_GROUP);
        assert_eq!(g["ids"][0], "0");
        assert_eq!(g["age_ms"], 9_999.0);
        assert_eq!(v["survivors"].as_array().unwrap().len(), 1);
    }
}
