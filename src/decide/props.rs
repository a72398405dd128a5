//! Property tests of the decision core over random worlds.
