// The light umbrella: the core and every resilience policy, for code that calls dependencies.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_POLICIES_HPP
#define BULWARK_POLICIES_HPP

// What most translation units need: outcomes, contexts, pipelines, and the policies that wrap a
// call (breaker, retry, timeout, bulkhead, rate limiter, fallback, cache, hedging, load shedding,
// test policies). Monitoring, routing, storage and the bridges are in <bulwark/bulwark.hpp>.
#include <bulwark/backoff.hpp>
#include <bulwark/bulkhead.hpp>
#include <bulwark/cache.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/core.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/hedging.hpp>
#include <bulwark/load_shedder.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/testing.hpp>
#include <bulwark/timeout.hpp>

#endif  // BULWARK_POLICIES_HPP
