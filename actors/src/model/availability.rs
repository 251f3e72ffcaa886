//! Availability: how reachable a person is, on Skype for Business's numeric scale.
//!
//! The numbers are SfB's canonical values (`ContactAvailability`; sources in docs/ARCHITECTURE.md,
//! § Protocol references) so SfB presence is ingested
//! without loss and every other source maps onto the same ordered scale. Higher = less
//! available; the merge policy's "least available wins" is a max over [`Availability::value`].
//! `Unknown` is *no opinion* (feed down, nothing known) and never takes part in that max.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Availability of a person, ordered from most to least available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum Availability {
    /// No opinion: the source says nothing, is down, or reports `PresenceUnknown`.
    #[default]
    Unknown,
    /// 3500 — free.
    Available,
    /// 5000 — free but idle (machine inactive).
    AvailableIdle,
    /// 6500 — busy (call, meeting, manual).
    Busy,
    /// 7500 — busy and idle.
    BusyIdle,
    /// 9500 — do not disturb.
    DoNotDisturb,
    /// 12500 — be right back.
    BeRightBack,
    /// 15500 — away (also off work).
    Away,
    /// 18500 — offline / appear offline.
    Offline,
}

impl Availability {
    /// Every known value, most available first (Unknown first).
    pub const ALL: [Availability; 9] = [
        Availability::Unknown,
        Availability::Available,
        Availability::AvailableIdle,
        Availability::Busy,
        Availability::BusyIdle,
        Availability::DoNotDisturb,
        Availability::BeRightBack,
        Availability::Away,
        Availability::Offline,
    ];

    /// The SfB canonical number; 0 for Unknown.
    pub const fn value(self) -> u32 {
        match self {
            Availability::Unknown => 0,
            Availability::Available => 3500,
            Availability::AvailableIdle => 5000,
            Availability::Busy => 6500,
            Availability::BusyIdle => 7500,
            Availability::DoNotDisturb => 9500,
            Availability::BeRightBack => 12500,
            Availability::Away => 15500,
            Availability::Offline => 18500,
        }
    }

    /// Maps an SfB availability number by range (the Lync schema's `availability` element;
    /// docs/ARCHITECTURE.md, § Availability). 0 and anything below
    /// 3000 mean "no opinion" — SfB uses 0 for "reset to the computed state" and the older
    /// docs start the Available range at 3000.
    pub const fn from_sfb(n: u32) -> Availability {
        match n {
            0..=2999 => Availability::Unknown,
            3000..=4499 => Availability::Available,
            4500..=5999 => Availability::AvailableIdle,
            6000..=7499 => Availability::Busy,
            7500..=8999 => Availability::BusyIdle,
            9000..=11999 => Availability::DoNotDisturb,
            12000..=14999 => Availability::BeRightBack,
            15000..=17999 => Availability::Away,
            _ => Availability::Offline,
        }
    }

    /// True for Available and AvailableIdle: a call can be put through.
    pub const fn is_available(self) -> bool {
        matches!(self, Availability::Available | Availability::AvailableIdle)
    }

    /// True unless Unknown.
    pub const fn is_known(self) -> bool {
        !matches!(self, Availability::Unknown)
    }

    /// The canonical name, as used on the wire (Graph's PascalCase spelling).
    pub const fn as_str(self) -> &'static str {
        match self {
            Availability::Unknown => "Unknown",
            Availability::Available => "Available",
            Availability::AvailableIdle => "AvailableIdle",
            Availability::Busy => "Busy",
            Availability::BusyIdle => "BusyIdle",
            Availability::DoNotDisturb => "DoNotDisturb",
            Availability::BeRightBack => "BeRightBack",
            Availability::Away => "Away",
            Availability::Offline => "Offline",
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no availability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown availability {0:?}")]
pub struct UnknownAvailability(pub String);

impl FromStr for Availability {
    type Err = UnknownAvailability;

    /// Case-insensitive; accepts Graph's names (including `PresenceUnknown`), SfB-style
    /// spellings (`free`, `idle-online`, `be-right-back`, `do-not-disturb`, `dnd`) and a
    /// bare SfB number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(n) = t.parse::<u32>() {
            return Ok(Availability::from_sfb(n));
        }
        let mut key = String::with_capacity(t.len());
        for c in t.chars().filter(|c| !matches!(c, '-' | '_' | ' ')) {
            key.push(c.to_ascii_lowercase());
        }
        Ok(match key.as_str() {
            "unknown" | "presenceunknown" | "none" => Availability::Unknown,
            "available" | "free" | "online" => Availability::Available,
            "availableidle" | "freeidle" | "idleonline" | "idle" => Availability::AvailableIdle,
            "busy" => Availability::Busy,
            "busyidle" | "idlebusy" => Availability::BusyIdle,
            "donotdisturb" | "dnd" => Availability::DoNotDisturb,
            "berightback" | "brb" | "temporarilyaway" => Availability::BeRightBack,
            "away" => Availability::Away,
            "offline" | "appearoffline" => Availability::Offline,
            _ => return Err(UnknownAvailability(t.chars().take(64).collect())),
        })
    }
}

impl Serialize for Availability {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Availability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sfb_ranges_map_at_every_boundary() {
        let cases = [
            (0, Availability::Unknown),
            (2999, Availability::Unknown),
            (3000, Availability::Available),
            (3500, Availability::Available),
            (4499, Availability::Available),
            (4500, Availability::AvailableIdle),
            (5999, Availability::AvailableIdle),
            (6000, Availability::Busy),
            (6900, Availability::Busy),
            (7499, Availability::Busy),
            (7500, Availability::BusyIdle),
            (8999, Availability::BusyIdle),
            (9000, Availability::DoNotDisturb),
            (11999, Availability::DoNotDisturb),
            (12000, Availability::BeRightBack),
            (14999, Availability::BeRightBack),
            (15000, Availability::Away),
            (17999, Availability::Away),
            (18000, Availability::Offline),
            (u32::MAX, Availability::Offline),
        ];
        for (n, want) in cases {
            assert_eq!(Availability::from_sfb(n), want, "sfb {n}");
        }
    }

    #[test]
    fn canonical_values_round_trip_through_sfb() {
        for a in Availability::ALL {
            assert_eq!(Availability::from_sfb(a.value()), a);
        }
    }

    #[test]
    fn order_is_least_available_last() {
        assert!(Availability::Available < Availability::Busy);
        assert!(Availability::DoNotDisturb < Availability::Away);
        assert!(Availability::Away < Availability::Offline);
        assert!(Availability::Unknown < Availability::Available);
    }

    #[test]
    fn parses_case_insensitively() {
        assert_eq!("busy".parse::<Availability>().unwrap(), Availability::Busy);
        assert_eq!("DoNotDisturb".parse::<Availability>().unwrap(), Availability::DoNotDisturb);
        assert_eq!("presenceUnknown".parse::<Availability>().unwrap(), Availability::Unknown);
        assert_eq!("be-right-back".parse::<Availability>().unwrap(), Availability::BeRightBack);
        assert_eq!("6500".parse::<Availability>().unwrap(), Availability::Busy);
        assert!("focusing".parse::<Availability>().is_err());
    }
}
