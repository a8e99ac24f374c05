//! The app client against recorded request shapes (kube-rs's tower-test): each scenario lists
//! the requests the client must make, in order, and what the API server answers.

#![allow(clippy::unwrap_used)]

use flyte_operator::app::kservice_object;
use flyte_operator::{AppClient, AppId, AppSpec, AppState, DeployOutcome};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const BASE: &str = "/apis/serving.knative.dev/v1/namespaces/flyte/services";

fn mocked() -> (AppClient, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        AppClient::new(kube::Client::new(service, "default")),
        handle,
    )
}

fn not_found(name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                "message": format!("services.serving.knative.dev \"{name}\" not found"), "code": 404 }),
    )
}

/// Expect one request: its method and path (and query, when given); answer it; return its body.
async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
    query: Option<&str>,
    answer: (StatusCode, Value),
) -> Value {
    let (request, send) = handle
        .next_request()
        .await
        .expect("the client sends a request");
    assert_eq!(request.method(), method);
    assert_eq!(request.uri().path(), path);
    if let Some(query) = query {
        assert_eq!(request.uri().query(), Some(query));
    }
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(answer.0)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer.1).unwrap()))
            .unwrap(),
    );
    if method == Method::PATCH {
        assert_eq!(
            content_type.as_deref(),
            Some("application/merge-patch+json")
        );
    }
    body
}

/// The stop patch, as Flyte's app client writes it.
fn flyte_stop_patch() -> Value {
    json!({
        "metadata": { "labels": {
            "flyte.org/app-stopped": "true",
            "networking.knative.dev/visibility": "cluster-local",
        }},
        "spec": { "template": { "metadata": { "annotations": {
            "autoscaling.knative.dev/min-scale": "0",
            "autoscaling.knative.dev/initial-scale": "0",
        }}}},
    })
}

fn app() -> AppId {
    AppId::new("proj", "dev", "MyApp")
}

fn spec(image: &str) -> AppSpec {
    AppSpec {
        image: image.to_owned(),
        args: vec!["serve".to_owned()],
        env: [("MODE".to_owned(), "prod".to_owned())].into(),
        port: Some(8080),
        min_replicas: Some(1),
        max_replicas: None,
    }
}

/// The object as the server holds it: ours plus server fields and Knative's own annotation.
fn stored(spec: &AppSpec, stopped: bool) -> Value {
    let mut object = kservice_object(&app(), spec).unwrap();
    object["metadata"]["resourceVersion"] = json!("41");
    object["metadata"]["uid"] = json!("u-1");
    object["metadata"]["annotations"]["serving.knative.dev/creator"] = json!("admin");
    if stopped {
        // As a stop left it: labels, and the template scaled to zero.
        object["metadata"]["labels"]["flyte.org/app-stopped"] = json!("true");
        object["metadata"]["labels"]["networking.knative.dev/visibility"] = json!("cluster-local");
        object["spec"]["template"]["metadata"]["annotations"] = json!({
            "autoscaling.knative.dev/min-scale": "0",
            "autoscaling.knative.dev/initial-scale": "0",
        });
    }
    object["status"] = json!({
        "url": "https://myapp-proj-dev.apps.example.com",
        "conditions": [{ "type": "Ready", "status": "True" }],
    });
    object
}

#[tokio::test]
async fn deploy_creates_a_missing_app() {
    let path = format!("{BASE}/myapp-proj-dev");

    // Created with the labels, the spec-sha and the spec annotation.
    let (client, mut handle) = mocked();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            &path,
            None,
            not_found("myapp-proj-dev"),
        )
        .await;
        let created = expect(
            &mut handle,
            Method::POST,
            BASE,
            None,
            (StatusCode::CREATED, stored(&spec("web:1"), false)),
        )
        .await;
        (created, handle)
    });
    assert_eq!(
        client.deploy(&app(), &spec("web:1")).await.unwrap(),
        DeployOutcome::Created
    );
    let (created, _) = server.await.unwrap();
    assert_eq!(created["metadata"]["name"], "myapp-proj-dev");
    assert_eq!(
        created["metadata"]["labels"]["flyte.org/app-managed"],
        "true"
    );
    assert_eq!(created["metadata"]["labels"]["flyte.org/app-name"], "MyApp");
    assert_eq!(
        created["metadata"]["annotations"]["flyte.org/app-id"],
        "proj/dev/MyApp"
    );
    assert_eq!(
        created["metadata"]["annotations"]["flyte.org/spec-sha"]
            .as_str()
            .unwrap()
            .len(),
        16
    );
    let container = &created["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "web:1");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(
        container["env"][0],
        json!({ "name": "MODE", "value": "prod" })
    );
    assert_eq!(
        created["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"],
        "1"
    );
}

/// Running with the same spec: one GET, nothing written.
#[tokio::test]
async fn deploy_skips_an_unchanged_running_app() {
    let (client, mut handle) = mocked();
    let path = format!("{BASE}/myapp-proj-dev");
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            &path,
            None,
            (StatusCode::OK, stored(&spec("web:1"), false)),
        )
        .await;
        handle
    });
    assert_eq!(
        client.deploy(&app(), &spec("web:1")).await.unwrap(),
        DeployOutcome::Unchanged
    );
    let mut handle = server.await.unwrap();
    drop(client);
    assert!(
        handle.next_request().await.is_none(),
        "no write for an unchanged spec"
    );
}

/// A new spec for a stopped app: replaced, labels and annotations merged, stop labels gone, the
/// resourceVersion kept, no stale status sent.
#[tokio::test]
async fn deploy_replaces_a_changed_or_stopped_app() {
    let (client, mut handle) = mocked();
    let path = format!("{BASE}/myapp-proj-dev");
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            &path,
            None,
            (StatusCode::OK, stored(&spec("web:1"), true)),
        )
        .await;
        expect(
            &mut handle,
            Method::PUT,
            &path,
            None,
            (StatusCode::OK, stored(&spec("web:2"), false)),
        )
        .await
    });
    assert_eq!(
        client.deploy(&app(), &spec("web:2")).await.unwrap(),
        DeployOutcome::Updated
    );
    let replaced = server.await.unwrap();
    assert_eq!(
        replaced["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    assert_eq!(replaced["metadata"]["resourceVersion"], "41");
    assert_eq!(
        replaced["metadata"]["annotations"]["serving.knative.dev/creator"],
        "admin"
    );
    assert_eq!(
        replaced["metadata"]["annotations"]["flyte.org/spec-sha"],
        kservice_object(&app(), &spec("web:2")).unwrap()["metadata"]["annotations"]["flyte.org/spec-sha"]
    );
    assert!(
        replaced["metadata"]["labels"]
            .get("flyte.org/app-stopped")
            .is_none()
    );
    assert!(
        replaced["metadata"]["labels"]
            .get("networking.knative.dev/visibility")
            .is_none()
    );
    assert!(replaced.get("status").is_none());
    // Started again: the stop's scale-to-zero is gone, the spec's own min-scale is back.
    assert_eq!(
        replaced["spec"]["template"]["metadata"]["annotations"],
        json!({ "autoscaling.knative.dev/min-scale": "1" })
    );
}

#[tokio::test]
async fn stop_get_list_and_delete() {
    let path = format!("{BASE}/myapp-proj-dev");
    let (client, mut handle) = mocked();
    let object_path = path.clone();
    let server = tokio::spawn(async move {
        let sent_patch = expect(
            &mut handle,
            Method::PATCH,
            &object_path,
            None,
            (StatusCode::OK, stored(&spec("web:1"), true)),
        )
        .await;
        expect(
            &mut handle,
            Method::PATCH,
            &object_path,
            None,
            not_found("myapp-proj-dev"),
        )
        .await;
        let stopped = stored(&spec("web:1"), true);
        expect(
            &mut handle,
            Method::GET,
            &object_path,
            None,
            (StatusCode::OK, stopped),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            &object_path,
            None,
            not_found("myapp-proj-dev"),
        )
        .await;
        let list = json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "ServiceList",
            "metadata": { "continue": "next-page" },
            "items": [stored(&spec("web:1"), false)],
        });
        expect(
            &mut handle,
            Method::GET,
            BASE,
            Some("&labelSelector=flyte.org%2Fapp-managed%3Dtrue%2Cflyte.org%2Fproject%3Dproj%2Cflyte.org%2Fdomain%3Ddev&limit=1&continue=tok"),
            (StatusCode::OK, list),
        )
        .await;
        expect(
            &mut handle,
            Method::DELETE,
            &object_path,
            None,
            (
                StatusCode::OK,
                json!({ "kind": "Status", "status": "Success" }),
            ),
        )
        .await;
        expect(
            &mut handle,
            Method::DELETE,
            &object_path,
            None,
            not_found("myapp-proj-dev"),
        )
        .await;
        sent_patch
    });
    assert!(client.stop(&app()).await.unwrap());
    assert!(
        !client.stop(&app()).await.unwrap(),
        "stopping a missing app is not an error"
    );
    let status = client.get(&app()).await.unwrap().unwrap();
    assert_eq!(status.state, AppState::Stopped);
    assert_eq!(
        status.spec,
        spec("web:1"),
        "the spec is rebuilt from its annotation"
    );
    assert!(client.get(&app()).await.unwrap().is_none());
    let page = client
        .list(Some("proj"), Some("dev"), 1, Some("tok".to_owned()))
        .await
        .unwrap();
    assert_eq!(page.next.as_deref(), Some("next-page"));
    assert_eq!(page.apps.len(), 1);
    assert_eq!(page.apps[0].state, AppState::Ready);
    assert_eq!(
        page.apps[0].url.as_deref(),
        Some("https://myapp-proj-dev.apps.example.com")
    );
    assert!(client.delete(&app()).await.unwrap());
    assert!(!client.delete(&app()).await.unwrap());
    assert_eq!(server.await.unwrap(), flyte_stop_patch());
}

fn pod(name: &str, service: &str, revision: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "flyte", "labels": {
            "serving.knative.dev/service": service, "serving.knative.dev/revision": revision } },
        "status": { "phase": "Running", "containerStatuses": [
            { "name": "user-container", "ready": ready, "restartCount": 0, "image": "x", "imageID": "",
              "state": {} } ] },
    })
}

/// Replicas are the pods of the latest ready revision (all of the service's before one is
/// ready); deleting one is forced, and a pod of another workload is refused untouched.
#[tokio::test]
async fn replicas_and_deleting_one() {
    let service_path = format!("{BASE}/myapp-proj-dev");
    let pods_path = "/api/v1/namespaces/flyte/pods";
    let (client, mut handle) = mocked();
    let server = tokio::spawn(async move {
        let mut service = stored(&spec("web:1"), false);
        service["status"]["latestReadyRevisionName"] = json!("myapp-proj-dev-00002");
        expect(
            &mut handle,
            Method::GET,
            &service_path,
            None,
            (StatusCode::OK, service),
        )
        .await;
        let pods = json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [pod("web-a", "myapp-proj-dev", "myapp-proj-dev-00002", true)] });
        expect(
            &mut handle,
            Method::GET,
            pods_path,
            Some("&labelSelector=serving.knative.dev%2Fservice%3Dmyapp-proj-dev%2Cserving.knative.dev%2Frevision%3Dmyapp-proj-dev-00002"),
            (StatusCode::OK, pods),
        )
        .await;
        // Before any revision is ready: all of the service's pods.
        expect(
            &mut handle,
            Method::GET,
            &service_path,
            None,
            (StatusCode::OK, stored(&spec("web:1"), false)),
        )
        .await;
        let pods = json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [pod("web-b", "myapp-proj-dev", "myapp-proj-dev-00001", false)] });
        expect(
            &mut handle,
            Method::GET,
            pods_path,
            Some("&labelSelector=serving.knative.dev%2Fservice%3Dmyapp-proj-dev"),
            (StatusCode::OK, pods),
        )
        .await;

        let web_a = format!("{pods_path}/web-a");
        expect(
            &mut handle,
            Method::GET,
            &web_a,
            None,
            (StatusCode::OK, pod("web-a", "myapp-proj-dev", "r", true)),
        )
        .await;
        let options = expect(
            &mut handle,
            Method::DELETE,
            &web_a,
            None,
            (StatusCode::OK, pod("web-a", "myapp-proj-dev", "r", true)),
        )
        .await;
        let other = format!("{pods_path}/db-0");
        expect(
            &mut handle,
            Method::GET,
            &other,
            None,
            (StatusCode::OK, pod("db-0", "database", "r", true)),
        )
        .await;
        (options, handle)
    });
    let replicas = client.replicas(&app()).await.unwrap();
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0].name, "web-a");
    assert!(replicas[0].ready);
    assert_eq!(
        replicas[0].revision.as_deref(),
        Some("myapp-proj-dev-00002")
    );
    let replicas = client.replicas(&app()).await.unwrap();
    assert_eq!(
        (replicas[0].name.as_str(), replicas[0].ready),
        ("web-b", false)
    );

    assert!(client.delete_replica(&app(), "web-a").await.unwrap());
    let err = client
        .delete_replica(&app(), "db-0")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not a replica of myapp-proj-dev") && err.contains("nothing was deleted"),
        "{err}"
    );
    let (options, mut handle) = server.await.unwrap();
    assert_eq!(options["gracePeriodSeconds"], 0, "{options}");
    drop(client);
    assert!(
        handle.next_request().await.is_none(),
        "the other workload's pod was not deleted"
    );
}

/// A running app with a new spec is replaced too; a KService of the same name that Flyte does
/// not manage, or that another app owns, is refused and left untouched.
#[tokio::test]
async fn deploy_updates_a_running_app_and_refuses_foreign_kservices() {
    let path = format!("{BASE}/myapp-proj-dev");
    let (client, mut handle) = mocked();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            &path,
            None,
            (StatusCode::OK, stored(&spec("web:1"), false)),
        )
        .await;
        let replaced = expect(
            &mut handle,
            Method::PUT,
            &path,
            None,
            (StatusCode::OK, stored(&spec("web:2"), false)),
        )
        .await;
        let mut foreign = stored(&spec("web:1"), false);
        foreign["metadata"]["labels"] = json!({ "app": "someone-elses" });
        expect(
            &mut handle,
            Method::GET,
            &path,
            None,
            (StatusCode::OK, foreign),
        )
        .await;
        (replaced, handle)
    });
    assert_eq!(
        client.deploy(&app(), &spec("web:2")).await.unwrap(),
        DeployOutcome::Updated
    );
    let err = client
        .deploy(&app(), &spec("web:2"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Flyte does not manage it; nothing was changed"),
        "{err}"
    );
    let (replaced, mut handle) = server.await.unwrap();
    assert_eq!(
        replaced["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    drop(client);
    assert!(
        handle.next_request().await.is_none(),
        "nothing was written to the foreign KService"
    );

    // A selector value that would change the query's meaning is refused before any request.
    let (client, mut handle) = mocked();
    let err = client
        .list(Some("p,x!=y"), None, 0, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a label value"), "{err}");
    drop(client);
    assert!(handle.next_request().await.is_none());
}

/// Watching one app: the list at the start comes first (as `Changed`), then the watch's
/// changes and deletion. The requests carry the app-managed selector and the name.
#[tokio::test]
async fn watch_reports_what_exists_then_changes() {
    use futures_util::StreamExt as _;
    let (client, mut handle) = mocked();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.uri().path(), BASE);
        let query = request.uri().query().unwrap().to_owned();
        assert!(
            query.contains("labelSelector=flyte.org%2Fapp-managed%3Dtrue"),
            "{query}"
        );
        assert!(
            query.contains("fieldSelector=metadata.name%3Dmyapp-proj-dev"),
            "{query}"
        );
        let list = json!({ "apiVersion": "serving.knative.dev/v1", "kind": "ServiceList",
            "metadata": { "resourceVersion": "100" }, "items": [stored(&spec("web:1"), false)] });
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&list).unwrap()))
                .unwrap(),
        );

        let (request, send) = handle.next_request().await.unwrap();
        let query = request.uri().query().unwrap().to_owned();
        assert!(
            query.contains("watch=true") && query.contains("resourceVersion=100"),
            "{query}"
        );
        let mut stopped = stored(&spec("web:1"), true);
        stopped["metadata"]["resourceVersion"] = json!("101");
        let mut gone = stored(&spec("web:1"), true);
        gone["metadata"]["resourceVersion"] = json!("102");
        let events = [
            json!({ "type": "MODIFIED", "object": stopped }),
            json!({ "type": "DELETED", "object": gone }),
        ];
        let body: Vec<u8> = events
            .iter()
            .flat_map(|e| {
                let mut line = serde_json::to_vec(e).unwrap();
                line.push(b'\n');
                line
            })
            .collect();
        send.send_response(Response::builder().body(Body::from(body)).unwrap());
        handle
    });
    let stream = client.watch(Some(&app())).unwrap();
    let events: Vec<_> = stream.take(3).collect().await;
    let _handle = server.await.unwrap();
    let states: Vec<String> = events
        .into_iter()
        .map(|e| match e.unwrap() {
            flyte_operator::AppEvent::Changed(status) => format!("changed {:?}", status.state),
            flyte_operator::AppEvent::Deleted { kservice_name } => {
                format!("deleted {kservice_name}")
            }
        })
        .collect();
    assert_eq!(
        states,
        ["changed Ready", "changed Stopped", "deleted myapp-proj-dev"]
    );
}
