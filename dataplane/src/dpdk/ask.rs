//! The control thread's questions to the workers, each in one atomic word per worker, and the answers.
//!
//! A worker answers between bursts; the control thread waits a bounded time for every answer. A worker held up
//! longer than that (descheduled on a busy host) answers late, after the control thread has given up, and its
//! answer then sits in its slot when the next question is asked. So every question carries a number, the
//! answer carries it back, and an answer to an older question is thrown away, instead of being taken as the
//! answer to the new one (a counters answer read as "no connections", say).
//!
//! ```text
//!  63            48 47    40 39    32 31                            0
//! +----------------+--------+--------+-------------------------------+
//! | question number| kind   | 0      | connection limit (kind Conns) |
//! +----------------+--------+--------+-------------------------------+
//! ```
//!
//! The kind is never 0, so a question is never the word 0, which means "no question".

use std::sync::Mutex;

use super::{ConnInfo, NeighInfo};
use crate::counters::WorkerCounters;

/// What the control thread asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Question {
    /// Up to this many connections (matching the runtime's current filter).
    Conns(u32),
    /// The neighbour table.
    Neighbors,
    /// The backend and local-address counters.
    Counters,
}

const CONNS: u64 = 1;
const NEIGHBORS: u64 = 2;
const COUNTERS: u64 = 3;

impl Question {
    /// The question as the word a worker reads, numbered `seq`.
    pub(super) fn encode(self, seq: u16) -> u64 {
        let (kind, limit) = match self {
            Question::Conns(n) => (CONNS, u64::from(n)),
            Question::Neighbors => (NEIGHBORS, 0),
            Question::Counters => (COUNTERS, 0),
        };
        (u64::from(seq) << 48) | (kind << 40) | limit
    }

    /// The question in a word and its number; `None` for 0 (no question) or a word no question encodes to.
    pub(super) fn decode(word: u64) -> Option<(u16, Question)> {
        let seq = (word >> 48) as u16;
        let limit = (word & 0xffff_ffff) as u32;
        let q = match ((word >> 40) & 0xff, (word >> 32) & 0xff, limit) {
            (CONNS, 0, n) => Question::Conns(n),
            (NEIGHBORS, 0, 0) => Question::Neighbors,
            (COUNTERS, 0, 0) => Question::Counters,
            _ => return None,
        };
        Some((seq, q))
    }
}

/// A worker's answer to the control thread.
#[derive(Debug)]
pub(super) enum Answer {
    /// Connections, and how many matched in all.
    Conns(Vec<ConnInfo>, usize),
    /// The neighbour table.
    Neighbors(Vec<NeighInfo>),
    /// The counters.
    Counters(WorkerCounters),
}

/// An answer, with the number of the question it answers.
pub(super) type Numbered = (u16, Answer);

/// Takes the answer to question `seq` out of a worker's slot. A late answer to an earlier question is taken
/// out as well and dropped; the slot is then empty for the answer still to come.
pub(super) fn take(slot: &Mutex<Option<Numbered>>, seq: u16) -> Option<Answer> {
    match slot.lock().ok()?.take() {
        Some((s, a)) if s == seq => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_come_back_with_their_number() {
        for (seq, q) in [
            (1, Question::Conns(1)),
            (0xffff, Question::Conns(u32::MAX)),
            (0, Question::Neighbors),
            (7, Question::Counters),
        ] {
            let w = q.encode(seq);
            assert_ne!(w, 0, "{q:?} is a question");
            assert_eq!(Question::decode(w), Some((seq, q)));
        }
    }

    #[test]
    fn no_question_and_unknown_words_decode_to_none() {
        assert_eq!(Question::decode(0), None);
        assert_eq!(Question::decode(1 << 48), None, "a number without a kind");
        assert_eq!(Question::decode((9 << 40) | 5), None, "an unknown kind");
        assert_eq!(
            Question::decode((NEIGHBORS << 40) | 5),
            None,
            "a limit on a neighbour question"
        );
        assert_eq!(
            Question::decode((CONNS << 40) | (1 << 32) | 5),
            None,
            "reserved bits set"
        );
    }

    #[test]
    fn a_late_answer_to_an_earlier_question_is_dropped_not_taken() {
        let slot = Mutex::new(Some((1, Answer::Counters(WorkerCounters::default()))));
        assert!(
            take(&slot, 2).is_none(),
            "question 1's answer is not question 2's"
        );
        assert!(
            slot.lock().map(|s| s.is_none()).unwrap_or(false),
            "and it is gone"
        );
        if let Ok(mut s) = slot.lock() {
            *s = Some((2, Answer::Conns(Vec::new(), 3)));
        }
        assert!(matches!(take(&slot, 2), Some(Answer::Conns(_, 3))));
        assert!(take(&slot, 2).is_none(), "taken once");
    }

    #[test]
    fn the_same_question_asked_again_is_a_different_word() {
        let q = Question::Counters;
        assert_ne!(q.encode(1), q.encode(2));
        assert_eq!(Question::decode(q.encode(2)).map(|(s, _)| s), Some(2));
    }
}
