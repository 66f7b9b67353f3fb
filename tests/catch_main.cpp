// Catch2 v2's main and implementation compiled with this project's flags: used where LibTorch
// needs the pre-C++11 string ABI and the installed Catch2WithMain was built with the new one.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
