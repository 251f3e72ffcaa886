//! Deterministic synthetic directories of Nordic-looking people, for tests,
//! benchmarks and demos at any size (the hub is sized for 100 k users).
//!
//! The same `(n, seed)` always yields the same people, on every platform:
//! the generator uses its own SplitMix64 rather than a system RNG. Ids,
//! e-mails, SIP URIs, mobiles, extensions and Entra GUIDs are unique, so
//! every identity resolves to exactly one person.

use super::fold::fold_search_text;
use super::phone::normalize_phone;
use super::{ExternalId, NumberPlan, Person, Phone, PhoneKind};

const SWEDISH_FIRST: &[&str] = &[
    "Anna", "Åsa", "Märta", "Björn", "Åke", "Sölve", "Lars", "Karin", "Maria", "Erik", "Anders",
    "Johan", "Per", "Mikael", "Eva", "Kristina", "Lena", "Birgitta", "Ingrid", "Sven", "Göran",
    "Jörgen", "Håkan", "Mårten", "Örjan", "Göte", "Britt-Marie", "Anna-Karin", "Jöns", "Linnéa",
    "Malin", "Sofia", "Emma", "Elin", "Hanna", "Oskar", "Gustav", "Nils", "Olof", "Ulf", "Bengt",
    "Stig", "Inger", "Ann-Sofie", "Agneta", "Tove", "Signe", "Ebba", "Alva", "Måns",
];

const SWEDISH_LAST: &[&str] = &[
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson",
    "Svensson", "Gustafsson", "Pettersson", "Jonsson", "Jansson", "Hansson", "Bengtsson",
    "Jönsson", "Lindberg", "Lindström", "Lindqvist", "Östberg", "Ängström", "Åberg", "Nyström",
    "Sjöberg", "Åkesson", "Öberg", "Björk", "Holmström", "Bergström", "Söderberg", "Wallin",
    "Engström", "Hellström", "Lundqvist", "Sandström", "Ekström", "Fröberg", "Löfgren", "Sjögren",
    "Strömberg",
];

const NORWEGIAN_FIRST: &[&str] = &[
    "Øystein", "Ørjan", "Åse", "Bjørn", "Kjersti", "Ingvild", "Sigrid", "Torbjørn", "Håvard",
    "Solveig", "Gudrun", "Eirik", "Jørgen", "Sindre", "Marit", "Ragnhild", "Trond", "Geir",
    "Stian", "Tore", "Bård", "Frøydis", "Kåre", "Synnøve", "Live",
];

const NORWEGIAN_LAST: &[&str] = &[
    "Bækkelund", "Dæhli", "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen",
    "Nilsen", "Kristiansen", "Jensen", "Karlsen", "Johnsen", "Pettersen", "Eriksen", "Berg",
    "Haugen", "Hagen", "Johannessen", "Strøm", "Solberg", "Bråten", "Sæther", "Løken", "Kvåle",
    "Grønlund", "Fjære", "Aasen", "Rønning", "Sørensen",
];

/// Departments with the titles used in them.
const DEPARTMENTS: &[(&str, &[&str])] = &[
    ("Växel", &["Telefonist", "Växeltelefonist", "Receptionist"]),
    ("Ledning", &["Verkställande direktör", "Ekonomidirektör", "Ledningsassistent"]),
    ("Ekonomi", &["Ekonomiassistent", "Controller", "Redovisningsekonom", "Lönespecialist"]),
    ("Försäljning", &["Säljare", "Key account manager", "Försäljningschef"]),
    ("Kundtjänst", &["Kundtjänstmedarbetare", "Kundtjänstchef", "Supporttekniker"]),
    ("IT", &["Systemutvecklare", "IT-tekniker", "Nätverkstekniker", "IT-chef"]),
    ("HR", &["HR-specialist", "HR-chef", "Rekryterare"]),
    ("Inköp", &["Inköpare", "Inköpschef"]),
    ("Logistik", &["Lagerarbetare", "Transportplanerare", "Logistikchef"]),
    ("Produktion", &["Produktionstekniker", "Montör", "Produktionschef", "Operatör"]),
    ("Marknad", &["Marknadsförare", "Kommunikatör", "Marknadschef"]),
    ("Juridik", &["Jurist", "Bolagsjurist"]),
    ("Forskning och utveckling", &["Utvecklingsingenjör", "Forskare", "Projektledare"]),
    ("Kvalitet", &["Kvalitetssamordnare", "Kvalitetschef", "Miljösamordnare"]),
    ("Fastighet", &["Fastighetsskötare", "Fastighetschef"]),
];

/// SplitMix64: tiny, fast, and good enough for fake data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform-ish in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// "Anna-Karin" → "anna-karin", "Bækkelund" → "baekkelund".
fn ascii_slug(s: &str) -> String {
    let mut out = String::new();
    fold_search_text(s, &mut out);
    out.replace(' ', "-")
}

/// A unique extension for person `i`: 4 digits for the first 9 000 people,
/// 5 digits for the next 90 000, then 6 digits (up to 999 000 people).
/// Multiplying by 7 permutes each range, so numbers look scattered.
fn extension(i: usize) -> Option<String> {
    let (base, span, k) = match i {
        0..=8_999 => (1_000, 9_000, i),
        9_000..=98_999 => (10_000, 90_000, i - 9_000),
        99_000..=998_999 => (100_000, 900_000, i - 99_000),
        _ => return None,
    };
    Some((base + (k * 7) % span).to_string())
}

/// A version-4-shaped GUID derived from the seed and index.
fn guid(seed: u64, i: usize) -> String {
    let a = mix(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let b = mix(a ^ 0x5851_F42D_4C95_7F2D);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0x0FFF,
        0x8000 | ((b >> 48) & 0x3FFF),
        b & 0xFFFF_FFFF_FFFF
    )
}

/// Generates `n` people deterministically from `seed`.
///
/// About 85 % get Swedish names and a Swedish mobile written nationally
/// ("070-123 45 67"), the rest Norwegian names and a Norwegian mobile
/// written internationally ("+47 912 34 567"); 60 % also get a Stockholm
/// work number. Everyone gets one of 15 Swedish departments, a matching
/// title, e-mail `first.last<N>@example.se` (ASCII-folded, N = index), the
/// same id, a SIP URI, a unique extension and an Entra GUID.
pub fn generate(n: usize, seed: u64) -> Vec<Person> {
    let plan = NumberPlan::default();
    let mut rng = Rng(seed ^ 0x6A09_E667_F3BC_C908);
    // Multiplier coprime to 10^7, so `i * MULT + offset (mod 10^7)` is a
    // permutation: mobiles stay unique for up to 10 million people.
    const MULT: usize = 7_919;
    const SPAN: usize = 10_000_000;
    let offset = (seed % SPAN as u64) as usize;
    let mut people = Vec::with_capacity(n);
    for i in 0..n {
        let norwegian = rng.below(100) < 15;
        let (first, last) = if norwegian {
            (*rng.pick(NORWEGIAN_FIRST), *rng.pick(NORWEGIAN_LAST))
        } else {
            (*rng.pick(SWEDISH_FIRST), *rng.pick(SWEDISH_LAST))
        };
        let (department, titles) = *rng.pick(DEPARTMENTS);
        let title = *rng.pick(titles);
        let local = format!("{}.{}{}", ascii_slug(first), ascii_slug(last), i);
        let email = format!("{local}@example.se");

        let m = (i.wrapping_mul(MULT).wrapping_add(offset)) % SPAN;
        let mobile = if norwegian {
            // 9xx xx xxx
            format!("+47 9{:02} {:02} {:03}", m / 100_000, (m / 1_000) % 100, m % 1_000)
        } else {
            // 070-xxx xx xx
            format!("070-{:03} {:02} {:02}", m / 10_000, (m / 100) % 100, m % 100)
        };
        // Room for exactly the phones we give (as the importers do): a
        // `vec![mobile]` that is pushed to reserves space for four, which at
        // 40 bytes a phone is dead weight in a 100 k directory.
        let with_work = rng.below(100) < 60;
        let mut phones = Vec::with_capacity(1 + usize::from(with_work));
        phones.push(phone(PhoneKind::Mobile, mobile, &plan));
        let ext = extension(i);
        if with_work {
            if let Some(e) = &ext {
                // A direct-in-dial number built from the extension: unique too.
                let did = format!("{:08}", 10_000_000 + e.parse::<usize>().unwrap_or(0) % 10_000_000);
                let work = format!("08-{} {} {}", &did[..3], &did[3..6], &did[6..]);
                phones.push(phone(PhoneKind::Work, work, &plan));
            }
        }
        people.push(Person {
            id: local.as_str().into(),
            name: format!("{first} {last}").into(),
            title: Some(title.into()),
            department: Some(department.into()),
            sip_uri: Some(format!("sip:{email}").into()),
            email: Some(email.into()),
            phones,
            extension: ext.map(String::into_boxed_str),
            external_ids: vec![ExternalId { kind: "entra".into(), value: guid(seed, i).into() }],
        });
    }
    people
}

fn phone(kind: PhoneKind, number: String, plan: &NumberPlan) -> Phone {
    let e164 = normalize_phone(&number, plan).map(String::into_boxed_str);
    Phone { kind, number: number.into(), e164 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn deterministic_and_unique() {
        let a = generate(2_000, 7);
        assert_eq!(a, generate(2_000, 7));
        assert_ne!(a, generate(2_000, 8));
        let unique = |f: &dyn Fn(&Person) -> String| a.iter().map(f).collect::<HashSet<_>>().len();
        assert_eq!(unique(&|p| p.id.to_string()), a.len());
        assert_eq!(unique(&|p| p.extension.as_deref().unwrap_or_default().to_string()), a.len());
        assert_eq!(unique(&|p| p.phones[0].e164.as_deref().unwrap_or_default().to_string()), a.len());
        assert_eq!(unique(&|p| p.external_ids[0].value.to_string()), a.len());
        for p in &a {
            assert!(p.id.is_ascii(), "{}", p.id);
            assert!(p.phones.iter().all(|ph| ph.e164.is_some()), "{:?}", p.phones);
            assert!(p.email.as_deref().is_some_and(|e| e.ends_with("@example.se")));
        }
    }

    #[test]
    fn extensions_are_unique_across_ranges() {
        let all: HashSet<String> = (0..120_000).filter_map(extension).collect();
        assert_eq!(all.len(), 120_000);
        assert_eq!(extension(0).map(|e| e.len()), Some(4));
        assert_eq!(extension(9_000).map(|e| e.len()), Some(5));
        assert_eq!(extension(99_000).map(|e| e.len()), Some(6));
        assert_eq!(extension(999_000), None);
    }

    #[test]
    fn guids_look_like_guids() {
        let g = guid(42, 3);
        assert_eq!(g.len(), 36);
        assert_eq!(g.as_bytes()[14], b'4');
        assert_ne!(g, guid(42, 4));
    }
}
