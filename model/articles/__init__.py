"""What an article is: the record, its canonical URL and id, and seed files read and written."""
