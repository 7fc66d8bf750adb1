// Queue stores: the QueueStore interface, the in-memory store and (on POSIX) the file store.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_QUEUE_HPP
#define BULWARK_QUEUE_HPP

#include <bulwark/in_memory_queue_store.hpp>
#include <bulwark/queue_store.hpp>

// The durable store needs POSIX file I/O: elsewhere this header brings the interface and the
// in-memory store only.
#if defined(__unix__) || defined(__APPLE__)
#include <bulwark/file_queue_store.hpp>
#endif

#endif  // BULWARK_QUEUE_HPP
