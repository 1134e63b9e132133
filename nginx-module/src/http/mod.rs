//! Talking to nginx's request machinery: phase handler registration and
//! generated replies (a body, a JSON answer, one more response header).

pub mod phase;
pub mod reply;
