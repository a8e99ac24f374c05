//! Cases for KService names, ingress URLs and spec hashes. Expected hashes were computed with
//! `sha256sum`, independently of this crate.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use flyte_kservice_naming::{
    IngressConfig, MAX_NAME_LEN, NamingError, Part, kservice_name, public_ingress, spec_sha,
};
use proptest::prelude::*;

fn a(n: usize) -> String {
    "a".repeat(n)
}

#[test]
fn names_match_flyte() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // The reference example.
        ("proj", "dev", "MyApp", "myapp-proj-dev"),
        (
            "flytesnacks",
            "development",
            "my-app",
            "my-app-flytesnacks-development",
        ),
        // Digits are fine anywhere, also first.
        ("p1", "d2", "9lives", "9lives-p1-d2"),
    ];
    for (project, domain, name, want) in cases {
        assert_eq!(
            kservice_name(project, domain, name).unwrap(),
            *want,
            "{project}/{domain}/{name}"
        );
    }
}

#[test]
fn long_names_are_cut_to_54_chars_plus_hash_of_original_case() {
    // 58 + "-proj-dev" = 67 chars; sha256("proj/dev/" + 58 a) starts a4155918.
    assert_eq!(
        kservice_name("proj", "dev", &a(58)).unwrap(),
        format!("{}-a4155918", a(54))
    );
    // The hash input keeps the caller's case; only the visible prefix is lower-cased.
    let mixed = format!("{}x", "B".repeat(57));
    assert_eq!(
        kservice_name("p", "dev", &mixed).unwrap(),
        format!("{}-12bc2afa", "b".repeat(54))
    );
}

#[test]
fn boundary_63_is_kept_64_is_hashed() {
    let at_63 = kservice_name("proj", "dev", &a(54)).unwrap();
    assert_eq!(at_63.len(), 63);
    assert_eq!(at_63, format!("{}-proj-dev", a(54)));

    let at_64 = kservice_name("proj", "dev", &a(55)).unwrap();
    assert_eq!(at_64.len(), MAX_NAME_LEN);
    assert!(at_64.starts_with(&format!("{}-", a(54))), "{at_64}");
    assert_ne!(at_64[55..], *"proj-dev");
}

#[test]
fn invalid_inputs_are_typed_errors() {
    let cases: &[(&str, &str, &str, NamingError)] = &[
        ("", "dev", "app", NamingError::EmptyPart(Part::Project)),
        ("proj", "", "app", NamingError::EmptyPart(Part::Domain)),
        ("proj", "dev", "", NamingError::EmptyPart(Part::Name)),
        (
            "proj",
            "dev",
            "my_app",
            NamingError::InvalidCharacter {
                part: Part::Name,
                value: "my_app".into(),
                ch: '_',
            },
        ),
        (
            "pr oj",
            "dev",
            "app",
            NamingError::InvalidCharacter {
                part: Part::Project,
                value: "pr oj".into(),
                ch: ' ',
            },
        ),
        (
            "proj",
            "dév",
            "app",
            NamingError::InvalidCharacter {
                part: Part::Domain,
                value: "dév".into(),
                ch: 'é',
            },
        ),
        (
            "proj",
            "dev",
            "a.b",
            NamingError::InvalidCharacter {
                part: Part::Name,
                value: "a.b".into(),
                ch: '.',
            },
        ),
        (
            "proj",
            "dev",
            "-app",
            NamingError::HyphenAtEdge {
                name: "-app-proj-dev".into(),
                where_: "start",
            },
        ),
        (
            "proj",
            "dev-",
            "app",
            NamingError::HyphenAtEdge {
                name: "app-proj-dev-".into(),
                where_: "end",
            },
        ),
    ];
    for (project, domain, name, want) in cases {
        assert_eq!(
            kservice_name(project, domain, name).unwrap_err(),
            *want,
            "{project:?}/{domain:?}/{name:?}"
        );
    }
}

#[test]
fn a_trailing_hyphen_cut_off_by_hashing_is_fine() {
    // The domain ends in '-', but the hash suffix replaces the end, as in Flyte.
    let name = kservice_name("proj", "dev-", &a(60)).unwrap();
    assert!(!name.ends_with('-'));
}

#[test]
fn rendered_values() {
    let with = |base: Option<&str>, scheme: Option<&str>, port: Option<u16>| IngressConfig {
        base_domain: base.map(str::to_owned),
        scheme: scheme.map(str::to_owned),
        port,
    };
    let mut out = String::new();
    for (project, domain, name) in [("proj", "dev", "MyApp"), ("proj", "dev", a(60).as_str())] {
        writeln!(
            out,
            "name({project}, {domain}, {name}) = {}",
            kservice_name(project, domain, name).unwrap()
        )
        .unwrap();
    }
    for config in [
        with(None, None, None),
        with(Some(""), None, None),
        with(Some("apps.Example.com"), None, None),
        with(Some("apps.example.com"), Some("http"), Some(8080)),
        with(Some("apps.example.com"), Some("ftp"), None),
        with(Some("apps example.com"), None, None),
        with(Some("apps.example.com"), None, Some(0)),
    ] {
        let rendered = match public_ingress("proj", "dev", "MyApp", &config) {
            Ok(url) => format!("{url:?}"),
            Err(e) => format!("error: {e}"),
        };
        writeln!(out, "{config:?} -> {rendered}").unwrap();
    }
    let spec: BTreeMap<&str, serde_json::Value> = [
        ("image", serde_json::json!("ghcr.io/org/app:1")),
        ("args", serde_json::json!(["serve", "--port", 8080])),
        ("env", serde_json::json!({"B": "2", "A": "1"})),
    ]
    .into_iter()
    .collect();
    writeln!(out, "spec_sha = {}", spec_sha(&spec).unwrap()).unwrap();
    insta::assert_snapshot!(out);
}

#[test]
fn spec_sha_ignores_map_order_and_sees_every_change() {
    let one = serde_json::json!({"a": 1, "b": {"y": [1, 2], "x": null}});
    let mut reordered = serde_json::Map::new();
    reordered.insert("b".into(), serde_json::json!({"x": null, "y": [1, 2]}));
    reordered.insert("a".into(), serde_json::json!(1));
    assert_eq!(spec_sha(&one).unwrap(), spec_sha(&reordered).unwrap());
    assert_eq!(spec_sha(&one).unwrap().len(), 16);
    let changed = serde_json::json!({"a": 1, "b": {"y": [2, 1], "x": null}});
    assert_ne!(spec_sha(&one).unwrap(), spec_sha(&changed).unwrap());
    // Canonical JSON of {} is "{}": sha256("{}") = 44136fa355b3678a...
    assert_eq!(
        spec_sha(&serde_json::json!({})).unwrap(),
        "44136fa355b3678a"
    );
}

#[test]
fn spec_sha_rejects_unserializable_specs() {
    let bad: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
    assert!(matches!(
        spec_sha(&bad),
        Err(NamingError::SpecNotSerializable(_))
    ));
}

fn part() -> impl Strategy<Value = String> {
    // Valid parts: letters (either case), digits and inner hyphens.
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,40}[a-zA-Z0-9])?"
}

proptest! {
    #[test]
    fn valid_inputs_give_valid_labels(project in part(), domain in part(), name in part()) {
        let label = kservice_name(&project, &domain, &name).unwrap();
        prop_assert!(label.len() <= MAX_NAME_LEN);
        prop_assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        prop_assert!(!label.starts_with('-') && !label.ends_with('-'));
        prop_assert_eq!(&label, &kservice_name(&project, &domain, &name).unwrap());
    }

    #[test]
    fn distinct_long_inputs_do_not_collide(
        project in part(), domain in part(), name in "[a-z]{60,80}", other in "[a-z]{60,80}"
    ) {
        prop_assume!(name != other);
        // Same first 54 characters, different tails: only the hash tells them apart.
        let other = format!("{}{}", &name[..54], &other[54..]);
        prop_assume!(name != other);
        prop_assert_ne!(
            kservice_name(&project, &domain, &name).unwrap(),
            kservice_name(&project, &domain, &other).unwrap()
        );
    }

    #[test]
    fn anything_is_either_a_valid_label_or_an_error(project in ".{0,40}", domain in ".{0,40}", name in ".{0,70}") {
        if let Ok(label) = kservice_name(&project, &domain, &name) {
            prop_assert!(label.len() <= MAX_NAME_LEN);
            prop_assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert!(!label.starts_with('-') && !label.ends_with('-'));
        }
    }
}
