//! The `entra` directory source against the Graph simulator (`/users/delta`).
