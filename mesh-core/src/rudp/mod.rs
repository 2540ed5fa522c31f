//! The reliable-UDP protocol as a sans-IO state machine.
