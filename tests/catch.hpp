// Catch2 v2 (Debian: catch2/catch.hpp) and v3 (catch2/catch_test_macros.hpp) behind one include:
// the major version CMake found (GROKKING_CATCH2_MAJOR), else whichever headers are there.
#pragma once
#if defined(GROKKING_CATCH2_MAJOR) ? GROKKING_CATCH2_MAJOR >= 3 : __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers.hpp>  // CHECK_THROWS_WITH
#include <catch2/matchers/catch_matchers_string.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
