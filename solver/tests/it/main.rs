mod lower;
mod scheduler;
