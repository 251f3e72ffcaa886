//! A provider's two signal slots per person: its own, instance `{name}` (the provider's
//! configured name), and a second one, `{name}-{suffix}`, for a state that must not overwrite
//! the first — O2G's routing (DND, forwards) beside the telephony, MBN's absence beside the
//! phone. A provider names its second slot once, with `second_slot!`.

use std::marker::PhantomData;

/// What a provider's second slot is.
pub trait Second {
    /// Its instance is `{name}-{SUFFIX}`.
    const SUFFIX: &'static str;
}

/// The instances of a provider's two slots per person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances<S> {
    /// The first slot: the provider's name.
    pub first: String,
    /// The second slot: `{name}-{suffix}`.
    pub second: String,
    slot: PhantomData<S>,
}

impl<S: Second> Instances<S> {
    /// The instances of the provider named `name`.
    pub fn of(name: &str) -> Instances<S> {
        Instances { first: name.to_string(), second: format!("{name}-{}", S::SUFFIX), slot: PhantomData }
    }
}

/// Declares a provider's second slot: a unit type whose [`Second::SUFFIX`] is the literal,
/// e.g. `second_slot!(/** doc */ AbsenceSlot = "absence");`, to use as `Instances<AbsenceSlot>`.
macro_rules! second_slot {
    ($(#[$doc:meta])* $slot:ident = $suffix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $slot;

        impl $crate::common::slots::Second for $slot {
            const SUFFIX: &'static str = $suffix;
        }
    };
}
pub(crate) use second_slot;

second_slot!(
    /// The absence slot beside the phone (`{name}-absence`): the mobile sources' absences (MBN,
    /// the operator adapter).
    AbsenceSlot = "absence"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_slot_is_the_name_the_second_is_suffixed() {
        let i = Instances::<AbsenceSlot>::of("mbn");
        assert_eq!((i.first.as_str(), i.second.as_str()), ("mbn", "mbn-absence"));
    }
}
