//! The `ldap` directory source against a real slapd (started by the test).
