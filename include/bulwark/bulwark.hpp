// bulwark — resilience policies for C++17 services.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_BULWARK_HPP
#define BULWARK_BULWARK_HPP

// The umbrella header: every public bulwark header.
#include <bulwark/backoff.hpp>
#include <bulwark/bulkhead.hpp>
#include <bulwark/cache.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/core.hpp>
#include <bulwark/degradation.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/fallback_chain.hpp>
#include <bulwark/health.hpp>
#include <bulwark/hedging.hpp>
#include <bulwark/load_shedder.hpp>
#include <bulwark/metrics.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/resources.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/system.hpp>
#include <bulwark/testing.hpp>
#include <bulwark/timeout.hpp>

#endif  // BULWARK_BULWARK_HPP
