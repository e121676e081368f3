from django.db import migrations, models


class Migration(migrations.Migration):
    """Altering a column makes Django rebuild the table (SQLite has no ALTER COLUMN): the
    schema editor needs foreign-key checks off while it does, and other tables point at it."""

    dependencies = [("shop", "0001_initial")]
    operations = [
        migrations.AlterField(
            model_name="account",
            name="name",
            field=models.CharField(max_length=40, unique=True),
        ),
    ]
