//! Mutation tests: no input panics the mapping engine or the signature check.
//!
//! Deterministic mutations (the crate's shared harness, [`crate::mutate`]) of the shipped example
//! payloads, run through each example's compiled mapping and then through the ingest rules; half
//! of the edits keep the structure, so many mutants still parse and reach the field, value-map
//! and timestamp code; the rest break it. Random paths are compiled too.

use super::hook::{Algorithm, Encoding, Scheme, Verifier};
use super::map::{Ingest, IngestConfig};
use crate::common::slots::Instances;
use super::parse::{JsonPath, XmlPath};
use super::tests::{example, samples};
use crate::mutate::{Mutator, Xorshift};
use presence_actors::model::AbsenceReason;

/// Every token: JSON's and XML's ([`crate::mutate`]), and a number too long for any integer.
fn tokens() -> Vec<&'static [u8]> {
    [crate::mutate::JSON_TOKENS, crate::mutate::XML_TOKENS, &[b"99999999999999999999"]].concat()
}

#[test]
fn mutated_payloads_never_panic_the_mapping_or_the_ingest() {
    let mut rng = Xorshift::default();
    let tokens = tokens();
    let mutator = Mutator::new(&tokens, &[]);
    let now = 1_772_442_904_000;
    let mut parsed = 0usize;
    let mut events = 0usize;
    for op in ["tdc", "phonero", "a1"] {
        let cfg = example(op);
        let m = cfg.compile().expect("example compiles");
        let mut ing = Ingest::new(IngestConfig {
            instances: Instances::of(op),
            forward_note: cfg.forward_note.clone(),
            forwarded_availability: None,
            reasons: AbsenceReason::defaults(),
            max_skew_ms: 300_000,
        });
        for (_, body) in samples(op) {
            for _ in 0..1500 {
                let b = mutator.mutate(&body, &mut rng);
                if let Ok(evs) = m.parse(&b) {
                    parsed += 1;
                    events += evs.len();
                    let resolve = |n: &str| (n.len() / 3 * 3 == n.len()).then_some((n.len() % 7) as u32);
                    let out = ing.apply(evs, &resolve, now);
                    for (_, s) in out.signals {
                        assert!(s.note.as_deref().is_none_or(|n| n.len() <= 500));
                    }
                }
            }
        }
    }
    // The structure-keeping half must still reach the deep code.
    assert!(parsed > 1000 && events > 1000, "parsed {parsed} mutants with {events} events");
}

#[test]
fn random_paths_and_signature_headers_never_panic() {
    let mut rng = Xorshift::new(42);
    let tokens = tokens();
    let mutator = Mutator::new(&tokens, &[]);
    let seeds: &[&[u8]] =
        &[b"$.events[*].a['b.c'][0]", b"/presence/subscriber", b"diversion/@target", b"t=1772442904,v1=abcdef0123"];
    let v = Verifier::hmac("x-sig", Algorithm::Sha256, b"k", Encoding::Hex, Scheme::Stripe, "", 300);
    let vb = Verifier::hmac("x-sig", Algorithm::Sha1, b"k", Encoding::Base64, Scheme::Plain, "sha1=", 300);
    for _ in 0..20_000 {
        let s = mutator.mutate(seeds[rng.below(seeds.len())], &mut rng);
        let s = String::from_utf8_lossy(&s);
        let _ = JsonPath::compile(&s);
        let _ = XmlPath::compile_events(&s);
        let _ = XmlPath::compile_field(&s);
        let _ = v.verify(|_| Some(&s), b"body", 1_772_442_904_000);
        let _ = vb.verify(|_| Some(&s), b"body", 0);
    }
}
