//! Skype for Business (to come).
