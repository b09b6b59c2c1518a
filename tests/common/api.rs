//! A scripted Kubernetes API server for the kube client: a tower service
//! that records each request and answers with the bodies a real
//! kube-apiserver v1.33 sent (tests/data/api). The same answers can be
//! served over HTTPS on 127.0.0.1 for the CLI, through a kubeconfig.

// Each test binary that includes this uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }
}

pub struct ApiServer {
    pub seen: Mutex<Vec<Seen>>,
    /// Requests no route expected.
    pub unexpected: Mutex<Vec<Seen>>,
    /// Lines sent down the namespaces watch, one event each.
    events_tx: mpsc::UnboundedSender<Bytes>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>,
    /// The namespaces list waits until this is true.
    gate: watch::Sender<bool>,
    /// Extra list bodies by path: each a list of pages, followed by `continue`.
    pub lists: Mutex<BTreeMap<String, Vec<Value>>>,
    posts: AtomicUsize,
    /// Paths whose next list fails with a 500, once each.
    pub fail_once: Mutex<Vec<String>>,
    /// The one Lease, as stored.
    lease: Mutex<Option<Value>>,
    /// The report APIs served ("wgpolicyk8s.io/v1alpha2", ...); none by default.
    pub report_apis: Mutex<Vec<String>>,
    /// Reports and events as stored, by their path.
    pub objects: Mutex<BTreeMap<String, Value>>,
    /// Watches of other collections that stream what tests send, by path.
    streams: Mutex<BTreeMap<String, Stream>>,
    uids: AtomicUsize,
}

/// Where a test's watch events go, and the receiving end until a watch takes it.
type Stream = (
    mpsc::UnboundedSender<Bytes>,
    Option<mpsc::UnboundedReceiver<Bytes>>,
);

pub fn api_data(name: &str) -> Vec<u8> {
    std::fs::read(super::data(&format!("api/{name}"))).unwrap()
}

/// Collections the code under test lists or watches; unscripted ones are empty.
const COLLECTIONS: &[&str] = &[
    "/api/v1/namespaces",
    "/apis/storage.k8s.io/v1/storageclasses",
    "/api/v1/persistentvolumeclaims",
    "/apis/autoscaling/v2/horizontalpodautoscalers",
    "/apis/apps/v1/deployments",
    "/apis/apps/v1/statefulsets",
    "/apis/apps/v1/daemonsets",
    "/apis/apps/v1/replicasets",
    "/api/v1/replicationcontrollers",
    "/api/v1/pods",
    "/apis/batch/v1/jobs",
    "/apis/batch/v1/cronjobs",
];

fn full(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(body.into())
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        )
        .unwrap()
}

/// A body that never ends: an idle watch.
fn idle() -> Response<Body> {
    let stream = futures_util::stream::pending::<Result<Frame<Bytes>, std::io::Error>>();
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap()
}

/// A watch answered with what is sent on `rx`, as it is sent.
fn watch_stream(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<Body> {
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(events.boxed())))
        .unwrap()
}

impl ApiServer {
    pub fn new() -> Arc<ApiServer> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Arc::new(ApiServer {
            seen: Mutex::new(Vec::new()),
            unexpected: Mutex::new(Vec::new()),
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
            gate: watch::channel(true).0,
            lists: Mutex::new(BTreeMap::new()),
            posts: AtomicUsize::new(0),
            fail_once: Mutex::new(Vec::new()),
            lease: Mutex::new(None),
            report_apis: Mutex::new(Vec::new()),
            objects: Mutex::new(BTreeMap::new()),
            streams: Mutex::new(BTreeMap::new()),
            uids: AtomicUsize::new(0),
        })
    }

    /// Serves the report API `api_version` (its discovery, list, apply and delete).
    pub fn serve_reports(&self, api_version: &str) {
        self.report_apis
            .lock()
            .unwrap()
            .push(api_version.to_string());
    }

    /// Sends `event` (a watch event object) down the watch of `collection`
    /// (`/apis/apps/v1/deployments`): the first watch of it streams them.
    /// A scripted list of the collection follows, so a GET of the object
    /// answers what the event says is stored.
    pub fn send_watch(&self, collection: &str, event: &Value) {
        if let Some(pages) = self.lists.lock().unwrap().get_mut(collection) {
            let object = &event["object"];
            let same = |i: &Value| {
                i["metadata"]["namespace"] == object["metadata"]["namespace"]
                    && i["metadata"]["name"] == object["metadata"]["name"]
            };
            for page in pages.iter_mut() {
                page["items"].as_array_mut().unwrap().retain(|i| !same(i));
            }
            if event["type"] != "DELETED" {
                pages[0]["items"]
                    .as_array_mut()
                    .unwrap()
                    .push(object.clone());
            }
        }
        let mut streams = self.streams.lock().unwrap();
        let (tx, _) = streams.entry(collection.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            (tx, Some(rx))
        });
        let mut bytes = serde_json::to_vec(event).unwrap();
        bytes.push(b'\n');
        tx.send(Bytes::from(bytes)).unwrap();
    }

    /// The stored object at `path`, if any.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    /// Holds the namespaces list (and so cache sync) until [`ApiServer::open`].
    pub fn close(&self) {
        self.gate.send_replace(false);
    }

    pub fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Sends one line of tests/data/api/namespaces-watch.jsonl down the watch.
    pub fn send_event(&self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.events_tx.send(Bytes::from(bytes)).unwrap();
    }

    /// Sets the pages a list path answers with.
    pub fn set_list(&self, path: &str, pages: Vec<Value>) {
        self.lists.lock().unwrap().insert(path.to_string(), pages);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Writes: anything but GET.
    pub fn writes(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.method != "GET")
            .collect()
    }

    /// A kube client whose every request this mock answers.
    pub fn client(self: &Arc<Self>) -> kube::Client {
        let me = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>(me.answer(&parts.method, &parts.uri, body.to_vec()).await)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Serves the same answers over HTTPS on 127.0.0.1, as an API server
    /// does, with a certificate from a fresh CA; returns the URL and the CA.
    pub async fn serve_https(self: &Arc<Self>) -> (String, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let generated = pvc_guard::certs::generate(
            "kube-apiserver",
            &["localhost".to_string()],
            &["127.0.0.1".parse().unwrap()],
            1,
        )
        .unwrap();
        let (key, not_after) = pvc_guard::server::tls::certified_key(
            generated.cert_pem.as_bytes(),
            generated.key_pem.as_bytes(),
        )
        .unwrap();
        let store = pvc_guard::server::tls::CertStore::new(key, not_after);
        let mut config = pvc_guard::server::tls::server_config(store, None).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let me = me.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let me = me.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(
                                    me.answer(&parts.method, &parts.uri, body.to_vec()).await,
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("https://{addr}"), generated.ca_pem)
    }

    async fn answer(
        &self,
        method: &hyper::Method,
        uri: &hyper::Uri,
        body: Vec<u8>,
    ) -> Response<Body> {
        let seen = Seen {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            body,
        };
        self.seen.lock().unwrap().push(seen.clone());
        let path = seen.path.as_str();
        if seen.is_watch() {
            if path == "/api/v1/namespaces"
                && let Some(rx) = self.events_rx.lock().unwrap().take()
            {
                return watch_stream(rx);
            }
            let rx = self
                .streams
                .lock()
                .unwrap()
                .entry(path.to_string())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (tx, Some(rx))
                })
                .1
                .take();
            if let Some(rx) = rx {
                return watch_stream(rx);
            }
            return idle();
        }
        let fail = {
            let mut once = self.fail_once.lock().unwrap();
            let at = once.iter().position(|p| p == path);
            at.map(|i| once.remove(i)).is_some()
        };
        if fail {
            return full(
                500,
                serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": "etcdserver: leader changed", "reason": "InternalError", "code": 500}))
                .unwrap(),
            );
        }
        if path.starts_with(LEASES) {
            return self.lease(method.as_str(), path, &seen.body);
        }
        if let Some(answer) = self.reports_and_events(method.as_str(), path, &seen.body) {
            return answer;
        }
        match (method.as_str(), path) {
            ("GET", "/api/v1/namespaces") => {
                let mut gate = self.gate.subscribe();
                let _ = gate.wait_for(|open| *open).await;
                full(200, api_data("namespaces-list.json"))
            }
            ("GET", p) if p.starts_with("/api/v1/namespaces/") && p.matches('/').count() == 4 => {
                let name = &p["/api/v1/namespaces/".len()..];
                let list: Value = serde_json::from_slice(&api_data("namespaces-list.json")).unwrap();
                match list["items"].as_array().unwrap().iter().find(|n| n["metadata"]["name"] == name) {
                    Some(n) => full(200, serde_json::to_vec(n).unwrap()),
                    None => full(404, api_data("pvc-not-found.json")),
                }
            }
            ("GET", "/apis/storage.k8s.io/v1/storageclasses") => {
                full(200, api_data("storageclasses-list.json"))
            }
            ("GET", "/api/v1/persistentvolumeclaims") => full(200, api_data("all-pvcs-list.json")),
            ("GET", "/api/v1/namespaces/shop/persistentvolumeclaims") => {
                full(200, api_data("shop-pvcs-list.json"))
            }
            ("GET", "/api/v1/namespaces/shop/persistentvolumeclaims/does-not-exist") => {
                full(404, api_data("pvc-not-found.json"))
            }
            ("POST", "/api/v1/namespaces/shop/persistentvolumeclaims") => {
                if self.posts.fetch_add(1, Ordering::SeqCst) == 0 {
                    full(201, api_data("pvc-create-response.json"))
                } else {
                    full(409, api_data("pvc-create-conflict.json"))
                }
            }
            // A ResourceQuota that allows no claims, as the API server words it.
            ("POST", "/api/v1/namespaces/platform/persistentvolumeclaims") => full(
                403,
                serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Forbidden", "code": 403,
                    "message": "persistentvolumeclaims \"ledger-db-data\" is forbidden: exceeded quota: no-claims, requested: persistentvolumeclaims=1, used: persistentvolumeclaims=0, limited: persistentvolumeclaims=0",
                    "details": {"name": "ledger-db-data", "kind": "persistentvolumeclaims"}}))
                .unwrap(),
            ),
            ("GET", p) if self.scripted_item(p).is_some() => {
                let (status, body) = self.scripted_item(p).unwrap();
                full(status, serde_json::to_vec(&body).unwrap())
            }
            ("GET", p) if self.lists.lock().unwrap().contains_key(p) => {
                let pages = self.lists.lock().unwrap()[p].clone();
                // Page n is asked for with continue=<n>.
                let n: usize = seen.param("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
                let mut page = pages[n].clone();
                if n + 1 < pages.len() {
                    page["metadata"]["continue"] = json!((n + 1).to_string());
                }
                full(200, serde_json::to_vec(&page).unwrap())
            }
            ("GET", p) if COLLECTIONS.contains(&cluster_wide(p).as_str()) => full(
                200,
                serde_json::to_vec(&json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}))
                    .unwrap(),
            ),
            _ => {
                self.unexpected.lock().unwrap().push(seen);
                full(404, api_data("pvc-not-found.json"))
            }
        }
    }
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/pvc-guard/leases";

/// (apiVersion, kind, plural) of the report APIs.
const REPORT_APIS: [(&str, &str, &str); 2] = [
    ("wgpolicyk8s.io/v1alpha2", "PolicyReport", "policyreports"),
    ("openreports.io/v1alpha1", "Report", "reports"),
];

impl ApiServer {
    /// Discovery, list, server-side apply and delete of the report APIs
    /// served, and events: stored as sent (an apply keeps the uid of what
    /// it replaces, as the API server does). `None`: not such a path.
    fn reports_and_events(&self, method: &str, path: &str, body: &[u8]) -> Option<Response<Body>> {
        let not_found = || full(404, api_data("pvc-not-found.json"));
        let served = self.report_apis.lock().unwrap().clone();
        for (api_version, kind, plural) in REPORT_APIS {
            let root = format!("/apis/{api_version}");
            if path == root {
                return Some(if served.iter().any(|s| s == api_version) {
                    full(200, serde_json::to_vec(&json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": api_version, "resources": [{"name": plural, "singularName": "",
                        "namespaced": true, "kind": kind, "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"]}]})).unwrap())
                } else {
                    not_found()
                });
            }
            if !path.starts_with(&format!("{root}/")) {
                continue;
            }
            if !served.iter().any(|s| s == api_version) {
                return Some(not_found());
            }
            if method == "GET" && path == format!("{root}/{plural}") {
                let items: Vec<Value> = self
                    .objects
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(p, _)| p.starts_with(&format!("{root}/namespaces/")))
                    .map(|(_, v)| v.clone())
                    .collect();
                return Some(full(200, serde_json::to_vec(&json!({"kind": format!("{kind}List"),
                    "apiVersion": api_version, "metadata": {"resourceVersion": "700"}, "items": items})).unwrap()));
            }
            let mut objects = self.objects.lock().unwrap();
            return Some(match method {
                "PATCH" => {
                    let mut object: Value = serde_json::from_slice(body).unwrap();
                    let uid = objects
                        .get(path)
                        .map(|o| o["metadata"]["uid"].clone())
                        .unwrap_or_else(|| {
                            json!(format!("uid-{}", self.uids.fetch_add(1, Ordering::SeqCst)))
                        });
                    object["metadata"]["uid"] = uid;
                    objects.insert(path.to_string(), object.clone());
                    full(200, serde_json::to_vec(&object).unwrap())
                }
                "DELETE" => match objects.remove(path) {
                    Some(_) => full(
                        200,
                        serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1",
                        "metadata": {}, "status": "Success"}))
                        .unwrap(),
                    ),
                    None => not_found(),
                },
                _ => full(405, Vec::new()),
            });
        }
        if path.starts_with("/apis/events.k8s.io/v1/namespaces/") {
            let mut objects = self.objects.lock().unwrap();
            return Some(match method {
                "POST" => {
                    let event: Value = serde_json::from_slice(body).unwrap();
                    let name = event["metadata"]["name"].as_str().unwrap_or("").to_string();
                    objects.insert(format!("{path}/{name}"), event.clone());
                    full(201, serde_json::to_vec(&event).unwrap())
                }
                "PATCH" => {
                    let event: Value = serde_json::from_slice(body).unwrap();
                    objects.insert(path.to_string(), event.clone());
                    full(200, serde_json::to_vec(&event).unwrap())
                }
                _ => full(405, Vec::new()),
            });
        }
        None
    }

    /// The events published so far (the last state of each).
    pub fn events(&self) -> Vec<Value> {
        self.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with("/apis/events.k8s.io/"))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl ApiServer {
    /// A GET of one object of a collection whose list is scripted: the
    /// item of that namespace and name with its kind, as the API server
    /// answers, else a 404. `None`: not such a path.
    fn scripted_item(&self, path: &str) -> Option<(u16, Value)> {
        let parts: Vec<&str> = path.split('/').collect();
        let at = parts.iter().position(|p| *p == "namespaces")?;
        // ["", "apis", group, version, "namespaces", namespace, plural, name]
        if parts.len() != at + 4 {
            return None;
        }
        let (namespace, name) = (parts[at + 1], parts[at + 3]);
        let collection = [&parts[..at], &parts[at + 2..at + 3]].concat().join("/");
        let lists = self.lists.lock().unwrap();
        let pages = lists.get(&collection)?;
        let found = pages.iter().find_map(|page| {
            let kind = page["kind"].as_str()?.strip_suffix("List")?.to_string();
            let item = page["items"].as_array()?.iter().find(|i| {
                i["metadata"]["namespace"] == namespace && i["metadata"]["name"] == name
            })?;
            let mut item = item.clone();
            item["kind"] = json!(kind);
            item["apiVersion"] = page["apiVersion"].clone();
            Some(item)
        });
        Some(match found {
            Some(item) => (200, item),
            None => (
                404,
                serde_json::from_slice(&api_data("pvc-not-found.json")).unwrap(),
            ),
        })
    }
}

impl ApiServer {
    /// The holder of the Lease, if any.
    pub fn lease_holder(&self) -> Option<String> {
        let lease = self.lease.lock().unwrap();
        lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    }

    /// Just enough of a Lease for leader election: create, get, and patches
    /// merged into the spec. A patch that takes holderIdentity from another
    /// live holder conflicts (409), as server-side apply's field ownership
    /// makes it do; a null clears a field.
    fn lease(&self, method: &str, path: &str, body: &[u8]) -> Response<Body> {
        let conflict = |what: &str| {
            full(
                409,
                serde_json::to_vec(
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": what, "reason": "Conflict", "code": 409}),
                )
                .unwrap(),
            )
        };
        let mut stored = self.lease.lock().unwrap();
        let named = path.len() > LEASES.len();
        match (method, named) {
            ("POST", false) => {
                if stored.is_some() {
                    return full(
                        409,
                        serde_json::to_vec(
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "AlreadyExists", "code": 409}),
                        )
                        .unwrap(),
                    );
                }
                let mut lease: Value = serde_json::from_slice(body).unwrap();
                lease["metadata"]["resourceVersion"] = json!("1");
                *stored = Some(lease.clone());
                full(201, serde_json::to_vec(&lease).unwrap())
            }
            ("GET", true) => match stored.as_ref() {
                Some(lease) => full(200, serde_json::to_vec(lease).unwrap()),
                None => full(404, api_data("pvc-not-found.json")),
            },
            ("PATCH", true) => {
                let Some(lease) = stored.as_mut() else {
                    return full(404, api_data("pvc-not-found.json"));
                };
                let patch: Value = serde_json::from_slice(body).unwrap();
                let holder = lease["spec"]["holderIdentity"].as_str().map(str::to_string);
                let taking = patch["spec"]["holderIdentity"].as_str();
                if let (Some(held), Some(taking)) = (&holder, taking)
                    && held != taking
                {
                    return conflict("holderIdentity is managed by another field manager");
                }
                if !lease["spec"].is_object() {
                    lease["spec"] = json!({});
                }
                for (k, v) in patch["spec"].as_object().into_iter().flatten() {
                    if v.is_null() {
                        lease["spec"].as_object_mut().unwrap().remove(k);
                    } else {
                        lease["spec"][k] = v.clone();
                    }
                }
                let version: u64 = lease["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("1")
                    .parse()
                    .unwrap_or(1);
                lease["metadata"]["resourceVersion"] = json!((version + 1).to_string());
                full(200, serde_json::to_vec(lease).unwrap())
            }
            _ => full(405, Vec::new()),
        }
    }
}

/// `/api/v1/namespaces/x/pods` → `/api/v1/pods`: a namespaced list's collection.
fn cluster_wide(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.iter().position(|p| *p == "namespaces") {
        Some(i) if parts.len() == i + 3 => [&parts[..i], &parts[i + 2..]].concat().join("/"),
        _ => path.to_string(),
    }
}
