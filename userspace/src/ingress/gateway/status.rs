//! Writing the Gateway API status back: the status subresource of each
//! GatewayClass, Gateway and HTTPRoute xdpgate answers for, as
//! [`translate`](super::translate) says it should be. A status is patched
//! only when what the API server holds differs from it, and a condition
//! keeps its `lastTransitionTime` while its status stays the same, so a
//! status write (which the watch reports back as a change) settles instead
//! of looping.
use std::collections::BTreeMap;

use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{
    objects::{Gateway, GatewayClass, HttpRoute},
    translate::{translate, ObjectStatus, StatusKind},
};
use crate::{
    ingress::{kube::KubeState, ObjectKey, Objects},
    proxy::{tls::check_pair, IngressConfig},
};

/// `desired` with every condition's `lastTransitionTime`: the one in
/// `existing` when the condition's status is unchanged, else `now`.
pub fn settle(desired: &mut Value, existing: Option<&Value>, now: &str) {
    match desired {
        Value::Object(map) => {
            let condition = ["type", "status", "reason"]
                .iter()
                .all(|k| map.contains_key(*k));
            if condition {
                let time = existing
                    .filter(|e| e.get("status") == map.get("status"))
                    .and_then(|e| e.get("lastTransitionTime"))
                    .cloned()
                    .unwrap_or_else(|| json!(now));
                map.insert("lastTransitionTime".to_string(), time);
                return;
            }
            for (key, value) in map.iter_mut() {
                settle(value, existing.and_then(|e| e.get(key)), now);
            }
        }
        Value::Array(items) => {
            let old = existing.and_then(Value::as_array);
            for item in items {
                let partner = old.and_then(|old| old.iter().find(|o| same_entry(item, o)));
                settle(item, partner, now);
            }
        }
        _ => {}
    }
}

/// Entries of a status list are the same entry when they have the same
/// condition type, the same parent (and controller), or the same name.
fn same_entry(a: &Value, b: &Value) -> bool {
    let field = |name: &str| a.get(name).is_some() && a.get(name) == b.get(name);
    if a.get("type").is_some() {
        return field("type");
    }
    if a.get("parentRef").is_some() {
        return field("parentRef") && field("controllerName");
    }
    field("name")
}

/// Whether `current` already holds everything in `desired` (a merge patch
/// of `desired` would change nothing).
pub fn holds(current: Option<&Value>, desired: &Value) -> bool {
    match (current, desired) {
        (Some(Value::Object(current)), Value::Object(desired)) => desired
            .iter()
            .all(|(key, value)| holds(current.get(key), value)),
        (Some(current), desired) => current == desired,
        (None, _) => false,
    }
}

fn current_status(objects: &Objects, status: &ObjectStatus) -> Option<Value> {
    let gateway = &objects.gateway;
    match status.kind {
        StatusKind::GatewayClass => gateway.classes.get(&status.key)?.status.clone(),
        StatusKind::Gateway => gateway.gateways.get(&status.key)?.status.clone(),
        StatusKind::HttpRoute => gateway.http_routes.get(&status.key)?.status.clone(),
    }
}

/// The statuses to write for `objects` now: `(kind, key, settled status)`
/// for each object whose status differs.
pub fn patches(objects: &Objects, config: &IngressConfig, now: &str) -> Vec<ObjectStatus> {
    let translation = translate(objects, config, &|c, k| check_pair(c, k));
    translation
        .statuses
        .into_iter()
        .filter_map(|mut wanted| {
            let current = current_status(objects, &wanted);
            settle(&mut wanted.status, current.as_ref(), now);
            (!holds(current.as_ref(), &wanted.status)).then_some(wanted)
        })
        .collect()
}

/// Follows the Kubernetes source and writes statuses until the source
/// ends. A failed write is logged and tried again on the next change or
/// after 10 s.
pub async fn write_loop(
    client: Client,
    mut state: watch::Receiver<KubeState>,
    config: IngressConfig,
) {
    // What was last written, so that a write the watch has not reported
    // back yet is not repeated.
    let mut written: BTreeMap<(StatusKind, ObjectKey), Value> = BTreeMap::new();
    let mut retry = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        let objects = {
            let current = state.borrow_and_update();
            current.synced.then(|| current.objects.clone())
        };
        if let Some(objects) = objects {
            let now = now_rfc3339();
            for wanted in patches(&objects, &config, &now) {
                let id = (wanted.kind, wanted.key.clone());
                if written.get(&id) == Some(&wanted.status) {
                    continue;
                }
                match write(&client, &wanted).await {
                    Ok(()) => {
                        written.insert(id, wanted.status);
                    }
                    Err(e) => {
                        written.remove(&id);
                        tracing::warn!(
                            "cannot write the status of {:?} {}/{}: {e}; trying again",
                            wanted.kind,
                            wanted.key.0,
                            wanted.key.1
                        );
                    }
                }
            }
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = retry.tick() => written.clear(),
        }
    }
}

async fn write(client: &Client, wanted: &ObjectStatus) -> Result<(), kube::Error> {
    let patch = Patch::Merge(json!({ "status": wanted.status }));
    let params = PatchParams::default();
    let (namespace, name) = (&wanted.key.0, &wanted.key.1);
    match wanted.kind {
        StatusKind::GatewayClass => {
            Api::<GatewayClass>::all(client.clone())
                .patch_status(name, &params, &patch)
                .await?;
        }
        StatusKind::Gateway => {
            Api::<Gateway>::namespaced(client.clone(), namespace)
                .patch_status(name, &params, &patch)
                .await?;
        }
        StatusKind::HttpRoute => {
            Api::<HttpRoute>::namespaced(client.clone(), namespace)
                .patch_status(name, &params, &patch)
                .await?;
        }
    }
    Ok(())
}

/// Now as RFC 3339 in UTC, whole seconds (as the API server writes times).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_condition_keeps_its_time_and_a_changed_one_gets_now() {
        let existing = json!({ "conditions": [
            { "type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok",
              "lastTransitionTime": "2025-01-01T00:00:00Z" },
            { "type": "Programmed", "status": "True", "reason": "Programmed", "message": "ok",
              "lastTransitionTime": "2025-01-01T00:00:00Z" }
        ]});
        let mut desired = json!({ "conditions": [
            { "type": "Programmed", "status": "False", "reason": "Invalid", "message": "no" },
            { "type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok" }
        ]});
        settle(&mut desired, Some(&existing), "2026-12-03T14:00:00Z");
        assert_eq!(
            desired["conditions"][0]["lastTransitionTime"],
            "2026-12-03T14:00:00Z"
        );
        assert_eq!(
            desired["conditions"][1]["lastTransitionTime"],
            "2025-01-01T00:00:00Z"
        );
        assert!(!holds(Some(&existing), &desired));
        let mut again = desired.clone();
        settle(&mut again, Some(&desired), "2026-12-03T15:00:00Z");
        assert!(
            holds(Some(&desired), &again),
            "a second pass writes nothing"
        );
    }
}
