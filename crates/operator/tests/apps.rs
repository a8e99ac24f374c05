//! The app client against a real API server with Knative Serving's own `Service` CRD (read from
//! the `knative.dev/serving` module as published): deploy, an unchanged redeploy that writes
//! nothing, a changed one, stop, paging through a list, replicas.
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use flyte_operator::{AppClient, AppId, AppSpec, AppState, DeployOutcome};
use flyte_testkit::{KNATIVE_SERVICE_CRD, KubeCluster};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::wait::{await_condition, conditions};

const SETTLE: Duration = Duration::from_mins(1);

async fn client(cluster: &KubeCluster) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cluster.kubeconfig()).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn spec(image: &str) -> AppSpec {
    AppSpec {
        image: image.to_owned(),
        args: vec!["serve".to_owned()],
        env: BTreeMap::from([("MODE".to_owned(), "prod".to_owned())]),
        port: Some(8080),
        min_replicas: Some(1),
        max_replicas: Some(3),
    }
}

/// Knative's CRD, as Knative publishes it, and the namespace apps live in.
async fn install_knative(client: &kube::Client) {
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&KNATIVE_SERVICE_CRD.require()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    tokio::time::timeout(
        SETTLE,
        await_condition(
            crds,
            "services.serving.knative.dev",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut flyte = Namespace::default();
    flyte.metadata.name = Some("flyte".to_owned());
    namespaces
        .create(&PostParams::default(), &flyte)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_live_on_knatives_own_service_crd() {
    let cluster = KubeCluster::start();
    let client = client(&cluster).await;
    install_knative(&client).await;
    let apps = AppClient::new(client.clone());
    let app = AppId::new("flytesnacks", "development", "dashboard");
    assert_eq!(
        apps.deploy(&app, &spec("nginx:1")).await.unwrap(),
        DeployOutcome::Created
    );
    let services = kube::Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "flyte",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("serving.knative.dev", "v1", "Service"),
            "services",
        ),
    );
    let name = app.kservice_name().unwrap();
    let version = |object: &DynamicObject| object.metadata.resource_version.clone();
    let stored = services.get(&name).await.unwrap();
    // Knative's schema kept everything the app client wrote.
    assert_eq!(
        stored.data["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    assert_eq!(
        apps.deploy(&app, &spec("nginx:1")).await.unwrap(),
        DeployOutcome::Unchanged
    );
    assert_eq!(
        version(&services.get(&name).await.unwrap()),
        version(&stored),
        "an unchanged redeploy writes nothing"
    );
    assert_eq!(
        apps.deploy(&app, &spec("nginx:2")).await.unwrap(),
        DeployOutcome::Updated
    );
    let got = apps.get(&app).await.unwrap().unwrap();
    assert_eq!(got.spec, spec("nginx:2"));
    assert!(apps.stop(&app).await.unwrap());
    assert_eq!(
        apps.get(&app).await.unwrap().unwrap().state,
        AppState::Stopped
    );

    // Five more apps, listed two at a time with the server's continue tokens.
    for i in 0..5 {
        let other = AppId::new("flytesnacks", "development", &format!("app-{i}"));
        apps.deploy(&other, &spec("nginx:1")).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = apps
            .list(Some("flytesnacks"), Some("development"), 2, token)
            .await
            .unwrap();
        pages += 1;
        assert!(page.apps.len() <= 2);
        seen.extend(page.apps.into_iter().map(|a| a.kservice_name));
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(pages, 3);

    // Replicas: the pods labelled with the service's name (no revision is ready: Knative's
    // controllers do not run here).
    let pods: Api<Pod> = Api::namespaced(client.clone(), "flyte");
    for i in 0..2 {
        let mut pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "user-container".to_owned(),
                    image: Some("nginx:2".to_owned()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        pod.metadata.name = Some(format!("{name}-{i}"));
        pod.metadata.labels = Some(BTreeMap::from([(
            "serving.knative.dev/service".to_owned(),
            name.clone(),
        )]));
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    assert_eq!(apps.replicas(&app).await.unwrap().len(), 2);
    assert!(apps.delete(&app).await.unwrap());
    assert!(apps.get(&app).await.unwrap().is_none());
}
