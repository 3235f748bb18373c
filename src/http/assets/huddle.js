// huddle.js: being written (issue 11).
export {};
