//! The live page's state: what components publish for `/ui` to show.
//!
//! The core knows nothing about what a panel means. A component publishes *panels*
//! (a title, a badge, labelled fields, short histories of numbers with an optional limit
//! line, one table, and actions an operator may run), the alert sink adds every alert it
//! raises to a bounded timeline, and alert channels add their delivery results to it.
//! `/ui` reads the board as JSON and is woken whenever it changes. Nothing is kept that
//! the pipelines do not already hold: each history is a ring of the latest values.

use futures_util::future::BoxFuture;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Alerts kept in the timeline.
pub const ALERTS_KEPT: usize = 100;

/// How a value should look: the page pairs every tone with a shape and a word, never
/// with colour alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    #[default]
    Neutral,
    Ok,
    Warn,
    Bad,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Field {
    pub key: String,
    pub label: String,
    /// What the page shows.
    pub text: String,
    /// The number behind the text, when there is one (for tests and tools).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub tone: Tone,
}

impl Field {
    pub fn text(key: &str, label: &str, text: impl Into<String>) -> Field {
        Field {
            key: key.into(),
            label: label.into(),
            text: text.into(),
            value: None,
            tone: Tone::Neutral,
        }
    }

    /// A number shown with `decimals` and a unit suffix (`" USDT"`, `"%"`, `" ms"`).
    pub fn number(key: &str, label: &str, value: f64, decimals: usize, unit: &str) -> Field {
        Field {
            key: key.into(),
            label: label.into(),
            text: format!("{value:.decimals$}{unit}"),
            value: Some(value),
            tone: Tone::Neutral,
        }
    }

    pub fn tone(mut self, tone: Tone) -> Field {
        self.tone = tone;
        self
    }
}

/// A bounded history of one number, with the limit it is held against.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub label: String,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// `[unix ms, value]`, oldest first.
    pub points: VecDeque<(u64, f64)>,
    #[serde(skip)]
    capacity: usize,
    /// Board sequence number of each point (parallel to `points`): lets a reader ask only
    /// for what it has not seen.
    #[serde(skip)]
    seqs: VecDeque<u64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Badge {
    pub text: String,
    pub tone: Tone,
}

/// An operator action on a panel (`/ui` shows it only when actions are enabled).
pub type ActionFn = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

#[derive(Clone, Serialize)]
pub struct ActionSpec {
    pub key: String,
    pub label: String,
    #[serde(skip)]
    run: ActionFn,
}

#[derive(Clone, Serialize)]
pub struct Panel {
    pub id: String,
    /// Panels of one group are shown together (`bots`, `collector`).
    pub group: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge: Option<Badge>,
    pub fields: Vec<Field>,
    pub series: BTreeMap<String, Series>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<Table>,
    pub actions: Vec<ActionSpec>,
    /// Unix ms of the last change.
    pub updated_ms: u64,
    /// Board sequence number of the last change.
    #[serde(skip)]
    changed_seq: u64,
    /// Points a series keeps when its publisher leaves it to the panel (see
    /// [`PanelEdit::history`]).
    #[serde(skip)]
    history: usize,
}

/// Points a series keeps by default: one hour at a 5 s interval.
pub const DEFAULT_HISTORY: usize = 720;

impl Panel {
    fn new(id: &str, group: &str) -> Panel {
        Panel {
            id: id.into(),
            group: group.into(),
            title: id.into(),
            badge: None,
            fields: Vec::new(),
            series: BTreeMap::new(),
            table: None,
            actions: Vec::new(),
            updated_ms: now_ms(),
            changed_seq: 0,
            history: DEFAULT_HISTORY,
        }
    }
}

/// What one component may change in a panel, under the board's lock.
pub struct PanelEdit<'a> {
    panel: &'a mut Panel,
    seq: &'a mut u64,
}

impl PanelEdit<'_> {
    pub fn title(&mut self, title: &str) -> &mut Self {
        if self.panel.title != title {
            self.panel.title = title.into();
        }
        self
    }

    pub fn badge(&mut self, badge: Option<Badge>) -> &mut Self {
        self.panel.badge = badge;
        self
    }

    /// Sets a field, in place when its key is already there (the first publisher's order
    /// is kept), else at the end.
    pub fn field(&mut self, f: Field) -> &mut Self {
        match self.panel.fields.iter_mut().find(|x| x.key == f.key) {
            Some(x) => *x = f,
            None => self.panel.fields.push(f),
        }
        self
    }

    /// How many points this panel's series keep when their publisher does not say
    /// (`point(.., 0, ..)`): the component that knows the interval sets it.
    pub fn history(&mut self, points: usize) -> &mut Self {
        self.panel.history = points.max(2);
        self
    }

    /// Appends a point to the series `key` (created with `capacity` points at most; 0:
    /// the panel's [`PanelEdit::history`]).
    pub fn point(
        &mut self,
        key: &str,
        label: &str,
        unit: &str,
        capacity: usize,
        value: f64,
    ) -> &mut Self {
        if !value.is_finite() {
            return self;
        }
        let capacity = if capacity == 0 {
            self.panel.history
        } else {
            capacity
        };
        let s = self
            .panel
            .series
            .entry(key.to_owned())
            .or_insert_with(|| Series {
                label: label.into(),
                unit: unit.into(),
                limit: None,
                points: VecDeque::new(),
                capacity: capacity.max(2),
                seqs: VecDeque::new(),
            });
        *self.seq += 1;
        s.points.push_back((now_ms(), value));
        s.seqs.push_back(*self.seq);
        while s.points.len() > s.capacity {
            s.points.pop_front();
            s.seqs.pop_front();
        }
        self
    }

    /// The limit line of series `key` (kept until changed).
    pub fn limit(&mut self, key: &str, limit: Option<f64>) -> &mut Self {
        if let Some(s) = self.panel.series.get_mut(key) {
            s.limit = limit;
        }
        self
    }

    pub fn table(&mut self, table: Option<Table>) -> &mut Self {
        self.panel.table = table;
        self
    }

    /// Offers an operator action on this panel (replaces one with the same key).
    pub fn action(&mut self, key: &str, label: &str, run: ActionFn) -> &mut Self {
        let spec = ActionSpec {
            key: key.into(),
            label: label.into(),
            run,
        };
        match self.panel.actions.iter_mut().find(|a| a.key == key) {
            Some(a) => *a = spec,
            None => self.panel.actions.push(spec),
        }
        self
    }
}

/// Where one alert channel's delivery stands.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelResult {
    pub channel: String,
    pub ok: bool,
    /// `sent`, or the error (never a secret: channels pass redacted errors).
    pub detail: String,
    pub at_ms: u64,
}

/// One alert record in the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEntry {
    /// Unique on this board (a restart starts again at 1; `epoch` tells them apart).
    pub id: u64,
    pub name: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    pub severity: &'static str,
    pub summary: String,
    pub fingerprint: String,
    pub source: String,
    /// `bot` and similar identifying labels, as text.
    pub labels: Vec<(String, String)>,
    /// When it was raised (unix ms).
    pub at_ms: u64,
    pub channels: Vec<ChannelResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_ms: Option<u64>,
}

#[derive(Default)]
struct Inner {
    panels: BTreeMap<String, Panel>,
    alerts: VecDeque<AlertEntry>,
    next_alert: u64,
    seq: u64,
}

pub struct Board {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    /// Identifies this process's board: ids restart with the process.
    pub epoch: u64,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            inner: Mutex::default(),
            changed: watch::channel(0).0,
            epoch: now_ms(),
        }
    }
}

/// The board as `/ui` reads it.
#[derive(Serialize)]
struct View<'a> {
    epoch: u64,
    /// Only what changed after this was included (0: everything).
    since: u64,
    seq: u64,
    panels: Vec<PanelView<'a>>,
    alerts: &'a VecDeque<AlertEntry>,
}

/// A panel with only the history points newer than the reader's `since`.
#[derive(Serialize)]
struct PanelView<'a> {
    id: &'a str,
    group: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    badge: &'a Option<Badge>,
    fields: &'a [Field],
    series: BTreeMap<&'a str, SeriesView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: &'a Option<Table>,
    actions: &'a [ActionSpec],
    updated_ms: u64,
}

#[derive(Serialize)]
struct SeriesView<'a> {
    label: &'a str,
    unit: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<f64>,
    points: Vec<(u64, f64)>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self, seq: u64) {
        self.changed.send_replace(seq);
    }

    /// Edits (or creates) panel `id` of `group`.
    pub fn update(&self, id: &str, group: &str, edit: impl FnOnce(&mut PanelEdit<'_>)) {
        let seq = {
            let mut g = self.lock();
            let inner = &mut *g;
            inner.seq += 1;
            let panel = inner
                .panels
                .entry(id.to_owned())
                .or_insert_with(|| Panel::new(id, group));
            panel.updated_ms = now_ms();
            let mut e = PanelEdit {
                panel,
                seq: &mut inner.seq,
            };
            edit(&mut e);
            let seq = inner.seq;
            if let Some(p) = inner.panels.get_mut(id) {
                p.changed_seq = seq;
            }
            seq
        };
        self.touch(seq);
    }

    /// Adds an alert to the timeline; returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn alert(
        &self,
        name: &str,
        firing: bool,
        severity: &'static str,
        summary: &str,
        fingerprint: &str,
        source: &str,
        labels: Vec<(String, String)>,
    ) -> u64 {
        let (id, seq) = {
            let mut g = self.lock();
            g.next_alert += 1;
            g.seq += 1;
            let id = g.next_alert;
            g.alerts.push_back(AlertEntry {
                id,
                name: name.into(),
                state: if firing { "firing" } else { "resolved" },
                severity,
                summary: summary.into(),
                fingerprint: fingerprint.into(),
                source: source.into(),
                labels,
                at_ms: now_ms(),
                channels: Vec::new(),
                acknowledged_ms: None,
            });
            while g.alerts.len() > ALERTS_KEPT {
                g.alerts.pop_front();
            }
            (id, g.seq)
        };
        self.touch(seq);
        id
    }

    /// Records a channel's delivery of the latest alert with `fingerprint` and state.
    pub fn channel_result(
        &self,
        fingerprint: &str,
        firing: bool,
        channel: &str,
        result: Result<(), String>,
    ) {
        let seq = {
            let mut g = self.lock();
            let state = if firing { "firing" } else { "resolved" };
            let Some(a) = g
                .alerts
                .iter_mut()
                .rev()
                .find(|a| a.fingerprint == fingerprint && a.state == state)
            else {
                return;
            };
            let r = ChannelResult {
                channel: channel.into(),
                ok: result.is_ok(),
                detail: result.err().unwrap_or_else(|| "sent".into()),
                at_ms: now_ms(),
            };
            match a.channels.iter_mut().find(|c| c.channel == channel) {
                Some(c) => *c = r,
                None => a.channels.push(r),
            }
            g.seq += 1;
            g.seq
        };
        self.touch(seq);
    }

    /// Marks alert `id` acknowledged; false when no such alert is kept.
    pub fn acknowledge(&self, id: u64) -> bool {
        let seq = {
            let mut g = self.lock();
            let Some(a) = g.alerts.iter_mut().find(|a| a.id == id) else {
                return false;
            };
            if a.acknowledged_ms.is_none() {
                a.acknowledged_ms = Some(now_ms());
            }
            g.seq += 1;
            g.seq
        };
        self.touch(seq);
        true
    }

    /// The action `key` of panel `panel`.
    pub fn action(&self, panel: &str, key: &str) -> Option<ActionFn> {
        self.lock()
            .panels
            .get(panel)?
            .actions
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.run.clone())
    }

    /// The board as JSON: with `since` = 0 everything; else only the panels changed
    /// after `since`, each with only its newer history points (a reader keeps the rest).
    pub fn view_json(&self, since: u64) -> (serde_json::Value, u64) {
        let g = self.lock();
        let panels = g
            .panels
            .values()
            .filter(|p| p.changed_seq > since || since == 0)
            .map(|p| PanelView {
                id: &p.id,
                group: &p.group,
                title: &p.title,
                badge: &p.badge,
                fields: &p.fields,
                series: p
                    .series
                    .iter()
                    .map(|(k, s)| {
                        let points = s
                            .points
                            .iter()
                            .zip(s.seqs.iter())
                            .filter(|(_, q)| **q > since)
                            .map(|(pt, _)| *pt)
                            .collect();
                        (
                            k.as_str(),
                            SeriesView {
                                label: &s.label,
                                unit: &s.unit,
                                limit: s.limit,
                                points,
                            },
                        )
                    })
                    .collect(),
                table: &p.table,
                actions: &p.actions,
                updated_ms: p.updated_ms,
            })
            .collect();
        let view = View {
            epoch: self.epoch,
            since,
            seq: g.seq,
            panels,
            alerts: &g.alerts,
        };
        (serde_json::to_value(&view).unwrap_or_default(), g.seq)
    }

    /// Woken on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_are_bounded_and_read_incrementally() {
        let b = Board::default();
        for i in 0..10 {
            b.update("p", "g", |e| {
                e.point("x", "X", "", 4, i as f64);
            });
        }
        let (full, seq) = b.view_json(0);
        let pts = full["panels"][0]["series"]["x"]["points"]
            .as_array()
            .unwrap();
        assert_eq!(pts.len(), 4);
        assert_eq!(pts[3][1], 9.0);
        b.update("p", "g", |e| {
            e.point("x", "X", "", 4, 10.0)
                .field(Field::number("f", "F", 1.5, 1, "%"));
        });
        let (inc, _) = b.view_json(seq);
        let pts = inc["panels"][0]["series"]["x"]["points"]
            .as_array()
            .unwrap();
        assert_eq!(pts.len(), 1);
        assert_eq!(pts[0][1], 10.0);
        assert_eq!(inc["panels"][0]["fields"][0]["text"], "1.5%");
        // A panel that did not change since is left out.
        let (_, seq) = b.view_json(0);
        b.update("q", "g", |e| {
            e.field(Field::text("t", "T", "x"));
        });
        let (inc, _) = b.view_json(seq);
        let ids: Vec<&str> = inc["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["q"]);
    }

    #[test]
    fn alerts_are_bounded_acknowledged_and_carry_channel_results() {
        let b = Board::default();
        for i in 0..(ALERTS_KEPT + 5) {
            b.alert("A", true, "critical", &format!("{i}"), "fp", "risk", vec![]);
        }
        let (v, _) = b.view_json(0);
        assert_eq!(v["alerts"].as_array().unwrap().len(), ALERTS_KEPT);
        let last = v["alerts"][ALERTS_KEPT - 1]["id"].as_u64().unwrap();
        b.channel_result("fp", true, "slack", Err("slack answered 500".into()));
        b.channel_result("fp", true, "slack", Ok(()));
        assert!(b.acknowledge(last));
        assert!(!b.acknowledge(1));
        let (v, _) = b.view_json(0);
        let a = &v["alerts"][ALERTS_KEPT - 1];
        assert_eq!(a["channels"].as_array().unwrap().len(), 1);
        assert_eq!(a["channels"][0]["ok"], true);
        assert!(a["acknowledged_ms"].as_u64().is_some());
    }
}
