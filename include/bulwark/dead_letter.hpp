// Dead letters: the vocabulary, the in-memory store and (on POSIX) the durable file store.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DEAD_LETTER_HPP
#define BULWARK_DEAD_LETTER_HPP

#include <bulwark/dead_letter_store.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>

// The durable store needs POSIX file I/O: elsewhere this header brings the interface and the
// in-memory store only.
#if defined(__unix__) || defined(__APPLE__)
#include <bulwark/file_dead_letter_store.hpp>
#endif

#endif  // BULWARK_DEAD_LETTER_HPP
