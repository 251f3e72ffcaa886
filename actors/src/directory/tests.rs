//! Tests across the directory module: identity resolution, departments, the
//! demo company fixture, a 100 000-person synthetic directory, garbage-input
//! ("never panic") properties, an ignored search micro-benchmark and an
//! ignored measurement of the resident memory of a 100 k directory:
//!
//! ```text
//! cargo test --release -- --ignored --nocapture search_bench
//! cargo test --release --lib memory_at_100k -- --ignored --nocapture
//! ```

use std::path::PathBuf;
use std::time::Instant;

use super::*;

fn small() -> Directory {
    let csv = "\
id,name,title,department,email,mobile,phone,extension,sip_uri,entra_id,external_ids
asa.ostberg,Åsa Östberg,Växelansvarig,Växel,Asa.Ostberg@Nordvik.se,070-123 45 67,08-555 100 00,1001,sip:asa.ostberg@nordvik.se,6F1C2B9A-1111-4000-8000-000000000001,hr:E-17
bjorn.angstrom,Björn Ängström,Ekonomichef,Ekonomi,bjorn@nordvik.se,+46 73 222 33 44,08-555 100 00,1002,,,
oystein,Øystein Bækkelund,Salgssjef,Salg Norge,oystein@nordvik.no,+47 912 34 567,,51001,sips:Oystein@Nordvik.no,,
marta,Märta Lindqvist,Controller,ekonomi,,,,1003,,,
";
    let people = from_csv(csv.as_bytes(), &NumberPlan::default()).expect("valid csv");
    Directory::build(people, &NumberPlan::default()).expect("valid directory")
}

#[test]
fn resolve_every_identity_form() {
    let d = small();
    let asa = d.by_id("asa.ostberg").expect("asa");
    let oystein = d.by_id("oystein").expect("oystein");
    for key in [
        "asa.ostberg",
        "asa.ostberg@nordvik.se",
        "ASA.OSTBERG@NORDVIK.SE",
        "mailto:Asa.Ostberg@nordvik.se",
        "sip:asa.ostberg@nordvik.se",
        "SIP:Asa.Ostberg@Nordvik.SE;transport=tls",
        "sips:asa.ostberg@nordvik.se",
        "\"Åsa Östberg\" <sip:asa.ostberg@nordvik.se>;tag=abc",
        "<sip:asa.ostberg@nordvik.se>",
        "6f1c2b9a-1111-4000-8000-000000000001",
        "{6F1C2B9A-1111-4000-8000-000000000001}",
        "6f1c2b9a111140008000000000000001",
        "entra:6F1C2B9A-1111-4000-8000-000000000001",
        "hr:e-17",
        "HR:E-17",
        "070-123 45 67",
        "+46701234567",
        "0046 70 123 45 67",
        "tel:+46701234567",
        "tel:+46-70-123-45-67;phone-context=nordvik.se",
        "sip:+46701234567@nordvik.se;user=phone",
        "1001",
        "tel:1001",
        "sip:1001@pbx.nordvik.se",
        " 1001 ",
    ] {
        assert_eq!(d.resolve(key), Some(asa), "{key:?}");
    }
    for key in ["sip:oystein@nordvik.no", "+47 912 34 567", "0047 91234567", "51001", "oystein@NORDVIK.no"] {
        assert_eq!(d.resolve(key), Some(oystein), "{key:?}");
    }
    // The shared work number belongs to two people: nobody.
    assert_eq!(d.resolve("08-555 100 00"), None);
    assert_eq!(d.resolve_phone("+46855510000"), None);
    for key in ["", " ", "nobody", "nobody@nordvik.se", "sip:", "sip:nobody@x", "9999", "entra:", "x:y", "123"] {
        assert_eq!(d.resolve(key), None, "{key:?}");
    }
    assert_eq!(d.resolve_phone("0701234567"), Some(asa));
    assert_eq!(d.resolve_extension("tel:1001"), Some(asa));
    assert_eq!(d.resolve_extension("0701234567"), None);
}

#[test]
fn departments_are_folded_and_counted() {
    let d = small();
    assert_eq!(d.departments(), vec![("Ekonomi", 2), ("Salg Norge", 1), ("Växel", 1)]);
    let eko = d.department_idx("EKONOMI").expect("ekonomi");
    assert_eq!(d.department_idx(" ekonomi "), Some(eko));
    assert_eq!(d.department_idx("vaxel"), d.department_idx("Växel"));
    assert!(d.department_idx("vaxel").is_some());
    assert_eq!(d.department_idx("Nope"), None);
    let marta = d.by_id("marta").expect("marta");
    assert_eq!(d.department_of(marta), Some(eko));
    assert_eq!(d.department_name(eko), Some("Ekonomi"));
}

#[test]
fn build_rejects_bad_ids() {
    let plan = NumberPlan::default();
    let dup = vec![Person::new("a", "A"), Person::new("b", "B"), Person::new("a", "C")];
    match Directory::build(dup, &plan) {
        Err(DirectoryError::DuplicateId { id, first: 0, second: 2 }) => assert_eq!(id, "a"),
        other => panic!("unexpected {other:?}"),
    }
    match Directory::build(vec![Person::new(" ", "A")], &plan) {
        Err(DirectoryError::EmptyId { index: 0 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    let empty = Directory::build(Vec::new(), &plan).expect("empty is fine");
    assert!(empty.is_empty());
    assert_eq!(empty.search(&SearchQuery::new("a")), SearchResult::default());
    assert_eq!(empty.search(&SearchQuery::new("")), SearchResult::default());
}

#[test]
fn accessors() {
    let d = small();
    assert_eq!(d.len(), 4);
    assert!(!d.is_empty());
    assert_eq!(d.people().count(), 4);
    assert_eq!(d.person(0).map(|p| p.id()), Some("asa.ostberg"));
    assert_eq!(d.person(99), None);
    assert_eq!(d.plan(), &NumberPlan::default());
    assert!(d.memory_bytes() > d.search_index_bytes());
    assert!(format!("{d:?}").contains("people: 4"));
}

// ------------------------------------------------------- demo company ----

/// Finds the demo fixture both here and where it lives in the main repo.
fn demo_csv_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        root.join("demo.csv"),
        root.join("fixtures/directory/demo.csv"),
        root.join("../fixtures/directory/demo.csv"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("demo.csv not found; looked at {candidates:?}"))
}

#[test]
fn demo_company_imports_and_searches() {
    let file = std::fs::File::open(demo_csv_path()).expect("open demo.csv");
    let plan = NumberPlan::default();
    let people = from_csv(file, &plan).expect("demo.csv imports");
    assert!((300..=340).contains(&people.len()), "{} people", people.len());
    let d = Directory::build(people, &plan).expect("demo directory builds");

    let first = d.search(&SearchQuery::new("asa")).items.first().copied();
    assert_eq!(first.and_then(|i| d.person(i)).map(|p| p.id()), Some("asa.ostberg"));
    let asa = d.by_id("asa.ostberg").expect("asa");
    assert_eq!(d.person(asa).map(|p| p.name()), Some("Åsa Östberg"));
    for name in ["Björn Ängström", "Øystein Bækkelund", "Märta Lindqvist", "Ørjan Dæhli", "Åke Nyström", "Sölve Åberg"] {
        let r = d.search(&SearchQuery::new(name));
        let top = r.items.first().and_then(|&i| d.person(i)).map(|p| p.name());
        assert_eq!(top, Some(name), "search {name:?}");
    }
    // Every identity of every person resolves back to them.
    for (i, p) in d.people() {
        assert_eq!(d.resolve(p.id()), Some(i));
        for key in [p.email(), p.sip_uri(), p.extension()].into_iter().flatten() {
            assert_eq!(d.resolve(key), Some(i), "{key}");
        }
        for x in p.external_ids() {
            assert_eq!(d.resolve(x.value), Some(i), "{}", x.value);
        }
        for ph in p.phones() {
            assert!(ph.e164.is_some(), "{} {}", p.id(), ph.number);
            // Work numbers may be shared (a switchboard); mobiles are personal.
            if ph.kind == PhoneKind::Mobile {
                assert_eq!(d.resolve(ph.number), Some(i), "{}", ph.number);
            }
        }
    }
    // Departments from the brief are present and the Växel is staffed.
    let depts: Vec<&str> = d.departments().into_iter().map(|(n, _)| n).collect();
    for want in ["Växel", "Ekonomi", "Forskning och utveckling", "Salg Norge", "IT"] {
        assert!(depts.contains(&want), "{want} missing from {depts:?}");
    }
    let vaxel = d.search(&SearchQuery { q: "", department: Some("vaxel"), limit: 100, offset: 0 });
    assert!(vaxel.total >= 3);
}

// ----------------------------------------------------- 100k synthetic ----

#[test]
fn synthetic_100k_queries() {
    let people = synth::generate(100_000, 1);
    let plan = NumberPlan::default();
    // Keep a few facts to check against before the people move into the directory.
    let probe = people[12_345].clone();
    let d = Directory::build(people, &plan).expect("synthetic directory builds");
    assert_eq!(d.len(), 100_000);

    // Brute-force reference for "name has a word starting with ostb".
    let name_words = |p: PersonRef<'_>| fold::search_text(p.name());
    let want = d.people().filter(|(_, p)| name_words(*p).split(' ').any(|w| w.starts_with("ostb"))).count();
    let r = d.search(&SearchQuery { q: "ÖSTB", department: None, limit: 10, offset: 0 });
    assert!(want > 100);
    assert_eq!(r.total, want); // no other field contains "ostb"
    assert_eq!(r.items.len(), 10);
    for &i in &r.items {
        assert!(name_words(d.person(i).expect("person")).contains("ostberg"));
    }

    // "asa": first results are people whose name starts with "Åsa", in name order.
    let r = d.search(&SearchQuery { q: "asa", department: None, limit: 50, offset: 0 });
    let names: Vec<String> = r.items.iter().map(|&i| name_words(d.person(i).expect("person"))).collect();
    assert!(names.iter().all(|n| n.starts_with("asa ")), "{names:?}");
    assert!(names.windows(2).all(|w| w[0] <= w[1]));

    // Department filter with query; every hit is in the department.
    let eko = d.department_idx("Ekonomi").expect("ekonomi");
    let r = d.search(&SearchQuery { q: "lars", department: Some("ekonomi"), limit: 1000, offset: 0 });
    assert!(r.total > 0);
    assert!(r.items.iter().all(|&i| d.department_of(i) == Some(eko)));
    let members = d.departments().into_iter().find(|(n, _)| *n == "Ekonomi").map(|(_, c)| c);
    let all_eko = d.search(&SearchQuery { q: "", department: Some("EKONOMI"), limit: 0, offset: 0 });
    assert_eq!(Some(all_eko.total), members);

    // The probe person is found by number, extension, id and GUID.
    let idx = d.by_id(&probe.id).expect("probe");
    let mobile = probe.phones[0].e164.as_deref().expect("e164");
    assert_eq!(d.resolve(mobile), Some(idx));
    let ext = probe.extension.as_deref().expect("ext");
    assert_eq!(d.resolve(ext), Some(idx));
    assert_eq!(d.resolve(&probe.external_ids[0].value.to_uppercase()), Some(idx));
    let r = d.search(&SearchQuery { q: mobile, department: None, limit: 5, offset: 0 });
    assert_eq!(r.items.first(), Some(&idx));
    assert_eq!(r.total, 1);
    let r = d.search(&SearchQuery::new(&probe.phones[0].number));
    assert_eq!(r.items.first(), Some(&idx));

    // Multi-word: every hit has both words.
    let r = d.search(&SearchQuery { q: "lars nil", department: None, limit: 20, offset: 0 });
    assert!(r.total > 0);
    let first = name_words(d.person(r.items[0]).expect("person"));
    assert!(first.starts_with("lars nil"), "{first}");

    // Memory budget: index well under 200 bytes/person, everything under 2 KB.
    let index_per_person = d.search_index_bytes() / d.len();
    let total_per_person = d.memory_bytes() / d.len();
    assert!(index_per_person < 150, "index {index_per_person} B/person");
    assert!(total_per_person < 2048, "total {total_per_person} B/person");
}

// ------------------------------------------------- garbage never panics ----

/// xorshift64*: deterministic garbage for the property tests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Random bytes biased towards the characters the parsers care about.
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        const INTERESTING: &[u8] = b"\",;|:\n\r\t +-()0123456789@<>[]{}\\/.x\xc3\xa5\xc3\xb6\xef\xbb\xbf\xff\x00";
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| match self.below(4) {
                0 => self.next() as u8,
                _ => INTERESTING[self.below(INTERESTING.len())],
            })
            .collect()
    }

    /// Random string from a mix of ASCII, Nordic letters, digits, symbols
    /// and multi-byte characters.
    fn string(&mut self, max_len: usize) -> String {
        const CHARS: &[char] = &[
            'a', 'Å', 'ö', 'Ø', 'æ', 'ß', 'İ', 'ŉ', 'Σ', '中', '😀', '\u{30A}', ' ', '-', '(', ')', '0', '0', '4',
            '6', '7', '+', '@', ':', ';', '<', '>', '"', '|', '\u{a0}', '\n', 'e', 'x', 't', 's', 'i', 'p',
        ];
        let len = self.below(max_len + 1);
        (0..len).map(|_| CHARS[self.below(CHARS.len())]).collect()
    }
}

#[test]
fn garbage_input_never_panics() {
    let plan = NumberPlan::default();
    let norway = NumberPlan::norway();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let d = small();
    for round in 0..3_000 {
        let bytes = rng.bytes(200);
        let _ = from_csv(&bytes[..], &plan);
        let _ = from_json(&bytes[..], &plan);
        // CSV with a valid header and garbage rows exercises the row path.
        let mut csv = b"name;email;mobile;phones;external_ids;extension;sip\n".to_vec();
        csv.extend_from_slice(&bytes);
        let _ = from_csv(&csv[..], &plan);
        let mut json = b"[{\"name\":\"".to_vec();
        json.extend_from_slice(&bytes);
        let _ = from_json(&json[..], &plan);

        let s = rng.string(40);
        let _ = normalize_phone(&s, &plan);
        let _ = normalize_phone(&s, &norway);
        let _ = normalize_extension(&s);
        let _ = fold(&s);
        let _ = fold::search_text(&s);
        let _ = d.resolve(&s);
        let _ = d.search(&SearchQuery { q: &s, department: Some(s.as_str()).filter(|_| round % 2 == 0), limit: 5, offset: 0 });
        let json = format!("[{{\"name\":{s:?},\"email\":{s:?},\"phones\":[{s:?}],\"extension\":{s:?}}}]");
        let _ = from_json(json.as_bytes(), &plan);
    }
}

#[test]
fn random_people_build_and_resolve() {
    // Arbitrary strings in every field still build (ids made unique) and
    // every query returns consistent totals.
    let plan = NumberPlan::default();
    let mut rng = XorShift(42);
    let mut people = Vec::new();
    for i in 0..300 {
        let mut p = Person::new(&format!("p{i}"), &rng.string(20));
        p.title = Some(rng.string(20).into());
        p.department = Some(rng.string(6).into());
        p.email = Some(rng.string(12).into());
        p.sip_uri = Some(rng.string(12).into());
        p.extension = Some(rng.string(6).into());
        p.phones = vec![Phone { kind: PhoneKind::Other, number: rng.string(14).into(), e164: Some(rng.string(8).into()) }];
        p.external_ids = vec![ExternalId { kind: rng.string(4).into(), value: rng.string(8).into() }];
        people.push(p);
    }
    let d = Directory::build(people, &plan).expect("builds");
    for _ in 0..500 {
        let s = rng.string(8);
        let all = d.search(&SearchQuery { q: &s, department: None, limit: usize::MAX, offset: 0 });
        assert_eq!(all.total, all.items.len());
        let page = d.search(&SearchQuery { q: &s, department: None, limit: 3, offset: 2 });
        assert_eq!(page.items, all.items.iter().skip(2).take(3).copied().collect::<Vec<_>>());
    }
}

// ------------------------------------------------------------ benchmark ----

#[test]
#[ignore = "benchmark: cargo test --release -- --ignored --nocapture search_bench"]
fn search_bench() {
    let plan = NumberPlan::default();
    let t = Instant::now();
    let people = synth::generate(100_000, 1);
    let generated = t.elapsed();
    let t = Instant::now();
    let d = Directory::build(people, &plan).expect("builds");
    let built = t.elapsed();
    println!("generate 100k: {generated:?}, build: {built:?}");
    println!(
        "memory: {} B/person total, search index {} B/person",
        d.memory_bytes() / d.len(),
        d.search_index_bytes() / d.len()
    );
    let queries = ["asa", "ostb", "and", "070", "ekonomi", "an", "a", "lars nil", "+46701", "12345", "sjöberg"];
    for q in queries {
        let sq = SearchQuery { q, department: None, limit: 20, offset: 0 };
        let mut total = 0;
        for _ in 0..5 {
            total = d.search(&sq).total; // warm-up
        }
        let iters = 200;
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(d.search(std::hint::black_box(&sq)));
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        println!("{q:>10}: {us:8.1} µs/query  ({total} matches)");
    }
    let sq = SearchQuery { q: "an", department: Some("Ekonomi"), limit: 20, offset: 0 };
    let iters = 200;
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(d.search(std::hint::black_box(&sq)));
    }
    println!("an+Ekonomi: {:8.1} µs/query", t.elapsed().as_secs_f64() * 1e6 / iters as f64);
    let t = Instant::now();
    for (i, p) in d.people().take(10_000) {
        assert_eq!(d.resolve(p.email().unwrap_or_default()), Some(i));
    }
    println!("resolve by e-mail: {:.2} µs", t.elapsed().as_secs_f64() * 1e6 / 10_000.0);
}

// ------------------------------------------------------- memory at 100k ----

/// Resident set size of this process in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|f| f.parse::<usize>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Real resident memory of a 100 k directory, people included. Run it alone
/// in release: other tests in the same process (a filter that also matches
/// `search_bench`, say) would disturb the RSS.
///
/// ```text
/// cargo test --release --lib memory_at_100k -- --ignored --nocapture
/// ```
#[test]
#[ignore = "measurement: cargo test --release --lib memory_at_100k -- --ignored --nocapture"]
fn memory_at_100k() {
    const N: usize = 100_000;
    let plan = NumberPlan::default();
    let before = rss_bytes();
    let people = synth::generate(N, 42);
    let people_only = rss_bytes();
    let d = Directory::build(people, &plan).expect("builds");
    let after = rss_bytes();
    let per = |b: usize| b / N;
    println!(
        "RSS: people alone {} B/person, directory (people included) {} B/person, of which indexes {} B/person",
        per(people_only.saturating_sub(before)),
        per(after.saturating_sub(before)),
        per(after.saturating_sub(people_only)),
    );
    println!(
        "memory_bytes(): {} B/person, search index {} B/person",
        d.memory_bytes() / d.len(),
        d.search_index_bytes() / d.len()
    );
    std::hint::black_box(&d);
}

// ------------------------------------------------------ compact storage ----

/// The compact form gives back exactly the people it was built from, and
/// `PersonRef` serialises to the same JSON as `Person` (the HTTP API and the
/// SQLite store depend on that shape).
#[test]
fn person_ref_round_trips_and_serialises_like_person() {
    let mut people = synth::generate(2_000, 7);
    // Edge cases the generator may not produce: empty but present fields,
    // no optional fields at all, long texts, several external ids.
    let mut bare = Person::new("bare", "");
    bare.title = Some("".into());
    bare.department = Some("  Växel ".into());
    people.push(bare);
    people.push(Person::new("minimal", "Min Imal"));
    let mut big = Person::new("big", &"Ö".repeat(40_000));
    big.phones = vec![
        Phone { kind: PhoneKind::Home, number: "08-12 34 56".into(), e164: None },
        Phone { kind: PhoneKind::Other, number: "+46 8 123 456".into(), e164: Some("+468123456".into()) },
    ];
    big.external_ids = vec![
        ExternalId { kind: "hr".into(), value: "E-1".into() },
        ExternalId { kind: "badge".into(), value: "x".repeat(300).into() },
    ];
    big.sip_uri = Some("sip:big@example.se".into());
    people.push(big);
    let d = Directory::build(people.clone(), &NumberPlan::default()).expect("builds");
    assert_eq!(d.len(), people.len());
    for ((i, r), p) in d.people().zip(&people) {
        assert_eq!(r.to_person(), *p, "person {i}");
        assert_eq!(r, *p);
        assert_eq!(r.phones().len(), p.phones.len());
        let json = serde_json::to_string(&r).expect("serialises");
        assert_eq!(json, serde_json::to_string(p).expect("serialises"), "person {i}");
        let back: Person = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, *p);
    }
    assert_eq!(d.resolve("hr:e-1"), d.by_id("big"));
    assert_eq!(d.person(0), d.person(0));
    assert_ne!(d.person(0), d.person(1));
}

#[test]
fn streaming_build_matches_build() {
    let plan = NumberPlan::default();
    let people = synth::generate(2000, 9);
    let a = Directory::build(people.clone(), &plan).unwrap();
    let b = Directory::build_streaming(people.clone(), 10, &plan).unwrap();
    assert_eq!(a.len(), b.len());
    for (i, p) in people.iter().enumerate() {
        let i = i as UserIdx;
        assert_eq!(b.person(i).unwrap().to_person(), *p);
        assert_eq!(b.resolve(&p.id), Some(i));
        if let Some(e) = &p.email {
            assert_eq!(a.resolve(e), b.resolve(e));
        }
    }
    let q = SearchQuery { q: "an", department: None, limit: 50, offset: 0 };
    assert_eq!(a.search(&q).items, b.search(&q).items);
    assert_eq!(a.departments(), b.departments());
}

#[test]
fn next_keeps_indexes_and_departments_and_reuses_a_leavers_index() {
    let plan = NumberPlan::sweden();
    let mut a = Person::new("anna", "Anna Andersson");
    a.department = Some("Växel".into());
    a.extension = Some("1001".into());
    let mut b = Person::new("bo", "Bo Berg");
    b.department = Some("Ekonomi".into());
    let mut c = Person::new("cia", "Cia Carlsson");
    c.department = Some("Växel".into());
    let d0 = Directory::build(vec![a.clone(), b.clone(), c.clone()], &plan).unwrap();
    let (vaxel, ekonomi) = (d0.department_idx("vaxel").unwrap(), d0.department_idx("ekonomi").unwrap());

    // Bo leaves, Cia changes title, Dan joins in a new department.
    let mut c2 = c.clone();
    c2.title = Some("Telefonist".into());
    let mut d = Person::new("dan", "Dan Dahl");
    d.department = Some("IT".into());
    let (d1, diff) = d0.next(vec![d.clone(), c2.clone(), a.clone()]).unwrap();
    let d1 = d1.unwrap();
    assert_eq!(diff, DirectoryDiff { added: vec![3], changed: vec![2], removed: vec![1], unchanged: 1 });
    assert_eq!((d1.len(), d1.count()), (4, 3));
    assert_eq!(d1.by_id("anna"), Some(0));
    assert_eq!(d1.by_id("cia"), Some(2));
    assert_eq!(d1.by_id("dan"), Some(3));
    assert!(d1.person(1).is_none(), "a leaver's index is vacant");
    assert_eq!(d1.by_id("bo"), None);
    assert_eq!(d1.resolve("1001"), Some(0));
    assert_eq!(d1.department_idx("vaxel"), Some(vaxel));
    assert_eq!(d1.department_idx("ekonomi"), Some(ekonomi), "an emptied department keeps its index");
    assert!(d1.departments().iter().all(|(name, _)| *name != "Ekonomi"), "but is not listed");
    assert_eq!(d1.people().map(|(i, _)| i).collect::<Vec<_>>(), vec![0, 2, 3]);
    let all = d1.search(&SearchQuery { q: "", department: None, offset: 0, limit: 10 });
    assert_eq!((all.total, all.items.len()), (3, 3), "vacant indexes are not searchable");
    let found = d1.search(&SearchQuery { q: "dan", department: None, offset: 0, limit: 10 });
    assert_eq!(found.items, vec![3]);

    // Bo comes back: his old index.
    let (d2, diff) = d1.next(vec![a.clone(), b, c2.clone(), d.clone()]).unwrap();
    let d2 = d2.unwrap();
    assert_eq!(diff.added, vec![1]);
    assert_eq!(d2.by_id("bo"), Some(1));
    assert_eq!(d2.department_of(1), Some(ekonomi));
    assert!(d2.next(vec![Person::new("x", "X"), Person::new("x", "Y")]).is_err());
    let everyone: Vec<Person> = d2.people().map(|(_, p)| p.to_person()).collect();
    let (none, same) = d2.next(everyone).unwrap();
    assert!(none.is_none() && same.is_empty() && same.unchanged == 4, "nothing changed: nothing built");
}
