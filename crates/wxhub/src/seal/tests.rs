use super::*;

const A: &str = "1f2e3d4c5b6a79880112233445566778899aabbccddeeff00102030405060708";
const B: &str = "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f";

fn key(hex: &str) -> EncryptionKey {
    EncryptionKey::from_hex(hex).expect("valid key")
}

fn sealer(current: Option<&str>, previous: Option<&str>) -> Sealer {
    Sealer::new(&StoreKeys {
        current: current.map(key),
        previous: previous.map(key),
    })
}

#[test]
fn a_sealed_value_opens_only_for_its_record_and_hides_the_plaintext() {
    let s = sealer(Some(A), None);
    let aad = aad("cred", &["wx1", "access_token:stable"]);
    let sealed = s.seal(&aad, "TOKEN-CANARY");
    assert!(
        sealed.starts_with(&format!("wxs1:{}:", key(A).id())),
        "{sealed}"
    );
    assert!(!sealed.contains("TOKEN-CANARY"));
    // A random nonce: the same value seals differently each time.
    assert_ne!(sealed, s.seal(&aad, "TOKEN-CANARY"));
    let opened = s.open(&aad, &sealed).expect("opens");
    assert_eq!(
        (opened.value.as_str(), opened.found),
        ("TOKEN-CANARY", Found::Current)
    );
    // Moved to another record: refused, never garbage.
    let other = super::aad("cred", &["wx2", "access_token:stable"]);
    let e = s.open(&other, &sealed).expect_err("another record");
    assert!(matches!(e, SealError::Rejected { .. }), "{e}");
    // Altered: refused.
    let mut altered = sealed.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(s.open(&aad, &altered).is_err());
}

#[test]
fn plaintext_opens_as_itself_and_is_reported_so() {
    let s = sealer(Some(A), None);
    let opened = s.open("x", "plain-token").expect("plaintext");
    assert_eq!(
        (opened.value.as_str(), opened.found),
        ("plain-token", Found::Plain)
    );
    let (resealed, found) = s.reseal("x", "plain-token").unwrap().expect("resealed");
    assert_eq!(found, Found::Plain);
    assert_eq!(s.open("x", &resealed).unwrap().value, "plain-token");
    // No key: values pass through.
    let none = Sealer::plaintext();
    assert_eq!(none.seal("x", "v"), "v");
    assert_eq!(none.reseal("x", "v").unwrap(), None);
}

#[test]
fn an_unknown_or_missing_key_is_an_error_naming_the_config_keys() {
    let sealed = sealer(Some(A), None).seal("x", "v");
    let e = sealer(Some(B), None)
        .open("x", &sealed)
        .expect_err("wrong key");
    let msg = e.to_string();
    assert!(msg.contains(key(A).id()), "{msg}");
    assert!(msg.contains("store.encryption_key"), "{msg}");
    assert!(msg.contains("store.previous_encryption_key"), "{msg}");
    let e = Sealer::plaintext().open("x", &sealed).expect_err("no key");
    assert!(matches!(e, SealError::NoKey { .. }));
    assert!(
        e.to_string().contains("store.encryption_key is not set"),
        "{e}"
    );
}

#[test]
fn rotation_opens_the_previous_key_and_reseals_under_the_current() {
    let old = sealer(Some(A), None).seal("x", "v");
    let s = sealer(Some(B), Some(A));
    assert_eq!(s.open("x", &old).unwrap().found, Found::Previous);
    let (new, found) = s.reseal("x", &old).unwrap().expect("resealed");
    assert_eq!(found, Found::Previous);
    assert_eq!(key_id_of(&new), Some(key(B).id()));
    assert_eq!(s.reseal("x", &new).unwrap(), None, "already current");
    assert_eq!(sealer(Some(B), None).open("x", &new).unwrap().value, "v");
}

#[test]
fn the_key_check_plans_start_up() {
    let a = sealer(Some(A), None);
    let check = a.key_check().expect("a check");
    assert_eq!(a.plan(Some(&check)), Ok(Plan::UpToDate));
    assert_eq!(a.plan(None), Ok(Plan::Reseal), "a plaintext store upgrades");
    assert_eq!(Sealer::plaintext().plan(None), Ok(Plan::Plaintext));
    assert!(matches!(
        Sealer::plaintext().plan(Some(&check)),
        Err(SealError::NoKey { .. })
    ));
    assert!(matches!(
        sealer(Some(B), None).plan(Some(&check)),
        Err(SealError::UnknownKey { .. })
    ));
    assert_eq!(
        sealer(Some(B), Some(A)).plan(Some(&check)),
        Ok(Plan::Reseal)
    );
    // A rotation's previous key is still given: re-seal stragglers.
    assert_eq!(
        sealer(Some(A), Some(B)).plan(Some(&check)),
        Ok(Plan::Reseal)
    );
}

#[test]
fn keys_parse_from_hex_only_and_never_show() {
    for bad in [
        "",
        "abc",
        &A[..63],
        &format!("{}g", &A[..63]),
        &"00".repeat(32),
    ] {
        let e = EncryptionKey::from_hex(bad).expect_err(bad);
        assert!(bad.is_empty() || !e.contains(bad), "{e}");
    }
    let k = key(&format!("  {A}\n"));
    assert_eq!(k.id().len(), 8);
    assert_ne!(k.id(), &A[..8], "the id is not the key's first digits");
    let debug = format!("{k:?} {:?}", sealer(Some(A), Some(B)));
    assert!(!debug.contains(A) && !debug.contains(&A[..16]), "{debug}");
    assert_eq!(&*k.expose_hex(), A);
    assert_ne!(
        EncryptionKey::generate().id(),
        EncryptionKey::generate().id()
    );
}
