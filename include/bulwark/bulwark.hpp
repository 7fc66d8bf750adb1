// The full umbrella: every public header, exactly what the single header holds.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_BULWARK_HPP
#define BULWARK_BULWARK_HPP

// Layer by layer, bottom up (docs/development.md has the table). <bulwark/policies.hpp> is the
// lighter include for code that only wraps calls.
#include <bulwark/adaptive_limiter.hpp>
#include <bulwark/admin.hpp>
#include <bulwark/breaker_health.hpp>
#include <bulwark/circuit_breaker_registry.hpp>
#include <bulwark/dead_letter.hpp>
#include <bulwark/degradation.hpp>
#include <bulwark/delivery.hpp>
#include <bulwark/delivery_error.hpp>
#include <bulwark/error_classifier.hpp>
#include <bulwark/fallback_chain.hpp>
#include <bulwark/fix_strategy.hpp>
#include <bulwark/health.hpp>
#include <bulwark/inline_vector.hpp>
#include <bulwark/metrics.hpp>
#include <bulwark/policies.hpp>
#include <bulwark/queue.hpp>
#include <bulwark/registry.hpp>
#include <bulwark/resources.hpp>
#include <bulwark/retry_header.hpp>
#include <bulwark/retry_queue.hpp>
#include <bulwark/system.hpp>
#include <bulwark/throttler.hpp>
#include <bulwark/ticking_clock.hpp>

#endif  // BULWARK_BULWARK_HPP
