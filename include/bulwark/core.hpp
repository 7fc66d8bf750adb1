// The core layer in one include: time, clocks, outcomes, contexts, errors, events, pipelines.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_CORE_HPP
#define BULWARK_CORE_HPP

// The core vocabulary every policy builds on: clocks, outcomes, contexts, rejections,
// classification, events, the policy concept and composition.
#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/context.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/policy.hpp>
#include <bulwark/version.hpp>

#endif  // BULWARK_CORE_HPP
